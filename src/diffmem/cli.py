"""diffmem: measure when diffusion models memorize their training data and when they generalize.

usage: diffmem [-v | -q] [--version] <command> [options]    (`diffmem <command> --help` for its options)

Each command is one stage of the Snakemake workflow (workflow/rules/*.smk call the same commands),
plus a few for people: check-config, resources, plan, summary. Docs: docs/ (pipeline.md lists the stages).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator

from diffmem import __version__
from diffmem.config import ConfigError, load_config
from diffmem.costs import cost_line
from diffmem.io import fail
from diffmem.log import configure

log = logging.getLogger(__name__)


# Each command imports its stage when it runs, not before: `diffmem fit` need not import torch, and
# `diffmem --help` stays instant. The imports are explicit, so readers and tools can follow them. A command's
# loader imports its stage and returns the function that runs it on the command's arguments, so that `main`
# can tell the imports (collected apart, `quiet_imports`) from the work.
def _prepare_data():
    from diffmem.stages import data
    return lambda argv: data.main(["prepare", *argv])


def _subsample():
    from diffmem.stages import data
    return lambda argv: data.main(["subsample", *argv])


def _train():
    from diffmem.stages import train
    return train.main


def _sample():
    from diffmem.stages import sample
    return sample.main


def _score():
    from diffmem.stages import score
    return score.main


def _classifier():
    from diffmem.stages import classifier
    return classifier.main


def _quality():
    from diffmem.stages import quality
    return quality.main


def _cube():
    from diffmem.stages import cube
    return cube.main


def _fit():
    from diffmem.stages import fit
    return fit.main


def _plot():
    from diffmem.stages import plot
    return plot.main


def _closed_form_sample():
    from diffmem.stages import closed_form
    return closed_form.main


def _sweep():
    from diffmem.stages import sweep
    return sweep.main


def _rf(sub):
    def load():
        from diffmem.stages import rf
        return lambda argv: rf.main([sub, *argv])
    return load


def _horizons(sub):
    def load():
        from diffmem.stages import horizons
        return lambda argv: horizons.main([sub, *argv])
    return load


def _linear_exact():
    from diffmem.stages import linear_exact
    return linear_exact.main


def _resources():
    from diffmem.stages import resources
    return resources.main


def _plan():
    from diffmem.stages import plan
    return plan.main


def _costs():
    from diffmem.stages import costs
    return costs.main


def _summary():
    from diffmem.stages import summary
    return summary.main


def _gallery():
    from diffmem.stages import gallery
    return gallery.main


def _copies_figure():
    from diffmem.stages import copies_figure
    return copies_figure.main


def _twin(sub):
    def load():
        from diffmem.stages import twin
        return lambda argv: twin.main([sub, *argv])
    return load


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


# command -> (what it does, its loader: imports the command's stage, returns its entry point)
COMMANDS: dict[str, tuple[str, Callable[[], Callable[[list[str]], None]]]] = {
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
    "check-config": ("validate a config and print it resolved", lambda: check_config),
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


@contextlib.contextmanager
def quiet_imports() -> Iterator[None]:
    """Import a command's stage without the cyclic garbage collector, then freeze what was imported.

    Importing torch, xarray, scipy or matplotlib makes 200-300 thousand objects that live as long as the process;
    with the collector on, it examines them again and again while they pile up, 0.5-0.9 CPU-seconds per process
    (gc.callbacks, measured for the train and plot stages' imports). The collector is off while the stage is
    imported; then gc.freeze() moves every object alive into the permanent generation, which collections skip,
    and the collector is on again for the command's own work (figures, for one, make reference cycles)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _help() -> str:
    width = max(map(len, COMMANDS))
    rows = [f"  {name:<{width}}  {what}" for name, (what, _) in COMMANDS.items()]
    return __doc__.split("\n", 2)[2].strip() + "\n\ncommands:\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """Run a command: `argv` (default: sys.argv). Without `argv` main is the process's entry point (the
    `diffmem` script, `python -m diffmem`), and it first hides the packages the command never uses
    (`unused_modules`) and imports the command's stage with the garbage collector off (`quiet_imports`); given
    `argv` (in-process, e.g. from tests) it leaves the interpreter as it is."""
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
        with quiet_imports() if own_process else contextlib.nullcontext():
            run = COMMANDS[args.command][1]()
        run(args.args)
    finally:  # the job's cost as its log's last line, also when it fails (`diffmem costs` reads it)
        if args.command not in ("costs", "summary", "check-config", "resources", "plan"):
            log.info(cost_line(args.command))


if __name__ == "__main__":
    main()
