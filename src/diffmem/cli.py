"""diffmem: measure when diffusion models memorize their training data and when they generalize.

usage: diffmem [-v | -q] [--version] <command> [options]    (`diffmem <command> --help` for its options)

Each command is one stage of the Snakemake workflow (workflow/rules/*.smk call the same commands),
plus a few for people: check-config, resources, plan, summary. Docs: docs/ (pipeline.md lists the stages).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Callable, Iterable

from diffmem import __version__
from diffmem.config import ConfigError, load_config
from diffmem.costs import cost_line
from diffmem.io import fail
from diffmem.log import configure

log = logging.getLogger(__name__)


# Each command imports its stage when it runs, not before: `diffmem fit` need not import torch, and
# `diffmem --help` stays instant. The imports are explicit, so readers and tools can follow them.
def _prepare_data(argv):
    from diffmem.stages import data
    data.main(["prepare", *argv])


def _subsample(argv):
    from diffmem.stages import data
    data.main(["subsample", *argv])


def _train(argv):
    from diffmem.stages import train
    train.main(argv)


def _sample(argv):
    from diffmem.stages import sample
    sample.main(argv)


def _score(argv):
    from diffmem.stages import score
    score.main(argv)


def _classifier(argv):
    from diffmem.stages import classifier
    classifier.main(argv)


def _quality(argv):
    from diffmem.stages import quality
    quality.main(argv)


def _cube(argv):
    from diffmem.stages import cube
    cube.main(argv)


def _fit(argv):
    from diffmem.stages import fit
    fit.main(argv)


def _plot(argv):
    from diffmem.stages import plot
    plot.main(argv)


def _closed_form_sample(argv):
    from diffmem.stages import closed_form
    closed_form.main(argv)


def _sweep(argv):
    from diffmem.stages import sweep
    sweep.main(argv)


def _rf(sub):
    def run(argv):
        from diffmem.stages import rf
        rf.main([sub, *argv])
    return run


def _horizons(sub):
    def run(argv):
        from diffmem.stages import horizons
        horizons.main([sub, *argv])
    return run


def _linear_exact(argv):
    from diffmem.stages import linear_exact
    linear_exact.main(argv)


def _resources(argv):
    from diffmem.stages import resources
    resources.main(argv)


def _plan(argv):
    from diffmem.stages import plan
    plan.main(argv)


def _costs(argv):
    from diffmem.stages import costs
    costs.main(argv)


def _summary(argv):
    from diffmem.stages import summary
    summary.main(argv)


def _gallery(argv):
    from diffmem.stages import gallery
    gallery.main(argv)


def _copies_figure(argv):
    from diffmem.stages import copies_figure
    copies_figure.main(argv)


def _twin(sub):
    def run(argv):
        from diffmem.stages import twin
        twin.main([sub, *argv])
    return run


def check_config(argv: list[str]) -> None:
    """Validate a config file and print it resolved (defaults filled in), or one line naming the bad key."""
    parser = argparse.ArgumentParser(prog="diffmem check-config", description=check_config.__doc__)
    parser.add_argument("config", nargs="?", default="config.yaml")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        fail(str(exc))
    print(json.dumps(cfg, indent=2))


# command -> (what it does, its entry point)
COMMANDS: dict[str, tuple[str, Callable[[list[str]], None]]] = {
    "prepare-data": ("build the pool and the held-out test split", _prepare_data),
    "subsample": ("write the nested training set of size n for a seed", _subsample),
    "train": ("train denoisers, checkpoints on a step grid", _train),
    "sample": ("sample every checkpoint of a run", _sample),
    "score": ("nearest-neighbour ratios d1/d2 and f_mem per step", _score),
    "classifier": ("train the feature classifier of the quality stage", _classifier),
    "quality": ("sample quality (FD, KID, exact errors) per step", _quality),
    "cube": ("combine per-run files into the (n, seed, step) cube", _cube),
    "fit": ("tau_mem, tau_gen and their scaling with n", _fit),
    "plot": ("the figures of an experiment", _plot),
    "horizons-fit": ("tau_mem and its exponent by training length (fit.horizons)", _horizons("fit")),
    "horizons-plot": ("the exponent against the training length", _horizons("plot")),
    "closed-form-sample": ("sample a closed-form family (empirical, linear)", _closed_form_sample),
    "sweep": ("combine a width or strength sweep into one cube", _sweep),
    "rf-train": ("train the random-features model of one run", _rf("train")),
    "rf-fit": ("split times and their scaling (random features)", _rf("fit")),
    "rf-plot": ("the random-features figures", _rf("plot")),
    "rf-compare": ("random-features experiments on one setup, side by side", _rf("compare")),
    "linear-exact": ("the linear family in closed form (run, cube, fit, plot)", _linear_exact),
    "gallery": ("copy galleries of every run", _gallery),
    "copies-figure": ("memorization per training example", _copies_figure),
    "twin": ("compare a run with its twin model", _twin("compare")),
    "twin-figure": ("the twin-model figure", _twin("plot")),
    "check-config": ("validate a config and print it resolved", check_config),
    "resources": ("what each experiment's jobs will request", _resources),
    "plan": ("GPU-hours and disk an experiment will take", _plan),
    "summary": ("an experiment's results at a glance", _summary),
    "costs": ("where an experiment's time went, stage by stage", _costs),
}


# Packages a library only probes for, marked missing (`hide_modules`) in the process of a command that never
# uses them, before anything imports the library:
# - dask: xarray imports dask.array at its first Dataset whenever dask is installed, to ask of every array whether
#   it is a dask array (~0.9 CPU-seconds of every job that touches xarray). Only the cube stage opens files as dask
#   arrays (inputs over its in-memory limit, or --lazy); every other command reads its files into memory.
# - scipy.stats and scipy.cluster: seaborn imports them for kernel density estimates and clustered heatmaps
#   (~1 and ~0.4 CPU-seconds), which no diffmem figure draws; diffmem's own statistics take their distributions
#   from scipy.special (diffmem.scaling).
LAZY_COMMANDS = frozenset({"cube"})
SEABORN_COMMANDS = frozenset({"plot", "copies-figure", "horizons-plot", "rf-plot", "rf-compare", "sweep",
                              "linear-exact", "twin-figure"})
SEABORN_OPTIONAL = ["scipy.stats", "scipy.cluster"]


def unused_modules(command: str) -> list[str]:
    """The packages `command` never imports although a library it uses would probe for them."""
    return ([] if command in LAZY_COMMANDS else ["dask"]) + (SEABORN_OPTIONAL if command in SEABORN_COMMANDS else [])


def hide_modules(modules: Iterable[str]) -> list[str]:
    """Mark packages missing for the rest of this process, unless already imported: `sys.modules[name] = None`
    makes importing them raise ImportError and importlib.util.find_spec answer None, as if not installed.
    Returns the names it marked."""
    hidden = [name for name in modules if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None
    return hidden


def _help() -> str:
    width = max(map(len, COMMANDS))
    rows = [f"  {name:<{width}}  {what}" for name, (what, _) in COMMANDS.items()]
    return __doc__.split("\n", 2)[2].strip() + "\n\ncommands:\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """Run a command: `argv` (default: sys.argv). Without `argv` main is the process's entry point (the
    `diffmem` script, `python -m diffmem`), and it first hides the packages the command never uses
    (`unused_modules`); given `argv` (in-process, e.g. from tests) it leaves the interpreter as it is."""
    own_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="diffmem", usage="diffmem [-v | -q] [--version] <command> [options]",
                                     description=__doc__.split("\n", 1)[0], epilog=_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"diffmem {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more messages (debug)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="fewer messages (warnings only)")
    parser.add_argument("command", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return
    if args.command not in COMMANDS:
        parser.exit(2, f"diffmem: error: unknown command {args.command!r}; `diffmem --help` lists them\n")
    configure(args.verbose - args.quiet)
    log.debug(f"diffmem {__version__}: {shlex.join([args.command, *args.args])}")
    if own_process and (hidden := hide_modules(unused_modules(args.command))):
        log.debug(f"marked missing for {args.command}: {', '.join(hidden)}")
    try:
        COMMANDS[args.command][1](args.args)
    finally:  # the job's cost as its log's last line, also when it fails (`diffmem costs` reads it)
        if args.command not in ("costs", "summary", "check-config", "resources", "plan"):
            log.info(cost_line(args.command))


if __name__ == "__main__":
    main()
