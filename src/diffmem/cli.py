"""The `diffmem` command: one subcommand per stage, the same entry points the Snakemake rules call.

    diffmem prepare-data --data '<json>' --out dataset.npz
    diffmem subsample --dataset dataset.npz --n 64 --seed 0 --out train.npz
    diffmem train ...      diffmem sample ...      diffmem score ...
    diffmem classifier ... diffmem quality ...
    diffmem cube ...       diffmem fit ...         diffmem plot ...
    diffmem closed-form-sample ...                 (families empirical and linear: no training)
    diffmem sweep ...                              (a width or strength sweep -> one cube)
    diffmem rf-train ...   diffmem rf-fit ...      diffmem rf-plot ...   (family random_features)
    diffmem linear-exact run|cube|fit|plot ...      (family linear_exact: closed form, batched)
    diffmem check-config config.yaml               (validate and print the resolved config)
    diffmem resources config.yaml [--gpus-per-train-job 1]   (what each experiment's jobs will request)
    diffmem summary results/<experiment>           (n, tau_mem with CI, tau_gen, final f_mem, n*, diagnostics)
    diffmem gallery ...    diffmem copies-figure ...  diffmem twin ...   diffmem twin-figure ...

`diffmem <stage> --help` lists each stage's options.
"""

from __future__ import annotations

import importlib
import json
import sys

STAGES = {
    "prepare-data": ("diffmem.data", ["prepare"]),
    "subsample": ("diffmem.data", ["subsample"]),
    "train": ("diffmem.train", []),
    "sample": ("diffmem.sample", []),
    "score": ("diffmem.score", []),
    "classifier": ("diffmem.classify", []),
    "quality": ("diffmem.quality", []),
    "cube": ("diffmem.cube", []),
    "fit": ("diffmem.fit", []),
    "plot": ("diffmem.plots", []),
    "closed-form-sample": ("diffmem.closed_form", []),
    "sweep": ("diffmem.sweep", []),
    "rf-train": ("diffmem.rf", ["train"]),
    "rf-fit": ("diffmem.rf", ["fit"]),
    "rf-plot": ("diffmem.rf", ["plot"]),
    "linear-exact": ("diffmem.linear_exact", []),
    "resources": ("diffmem.resources", []),
    "summary": ("diffmem.summary", []),
    "gallery": ("diffmem.gallery", []),
    "copies-figure": ("diffmem.copies_figure", []),
    "twin": ("diffmem.twin", ["compare"]),
    "twin-figure": ("diffmem.twin", ["plot"]),
}


def check_config(argv: list[str]) -> None:
    from diffmem.config import ConfigError, load_config
    from diffmem.io import fail

    path = argv[0] if argv else "config.yaml"
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        fail(str(exc))
    print(json.dumps(cfg, indent=2))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("stages:", ", ".join([*STAGES, "check-config"]))
        return
    cmd, rest = argv[0], argv[1:]
    if cmd == "check-config":
        check_config(rest)
        return
    if cmd not in STAGES:
        print(f"diffmem: error: unknown stage {cmd!r}; choose from {', '.join(STAGES)}, check-config", file=sys.stderr)
        raise SystemExit(2)
    module, prefix = STAGES[cmd]
    importlib.import_module(module).main(prefix + rest)


if __name__ == "__main__":
    main()
