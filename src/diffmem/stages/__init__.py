"""The stages Snakemake calls, one module each, each with its `main(argv)`: `diffmem <stage> ...`.

A stage reads its inputs and config slice, calls the library (and the figures), and writes its
outputs atomically. The numerical library never imports a stage.
"""

from __future__ import annotations

import argparse

from diffmem.costs import mark_stage_start
from diffmem.io import fail


def stage_parser(prog: str, doc: str, module: str) -> argparse.ArgumentParser:
    """A stage's argument parser: the first paragraph of its docstring, and where the rest is. Building it
    marks the end of the job's start-up (diffmem.costs)."""
    mark_stage_start()
    return argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0],
                                   epilog=f"details: python -m pydoc {module}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_run_settings(parser: argparse.ArgumentParser) -> None:
    """--run-settings: the run settings of the stage's config section (diffmem.config.RUN_SETTINGS)."""
    parser.add_argument("--run-settings", default=None,
                        help="the section's run settings as JSON (threads, devices, batching: what does not change results)")


def one_per_run(prog: str, **lists: list | None) -> int:
    """The number of runs of a stage that takes several runs at once (the workflow's grouped training and
    evaluation jobs): every given list option holds one entry per run; None (an optional option left out) is
    skipped. Exits with one line naming the options and their lengths when they disagree."""
    given = {name: values for name, values in lists.items() if values is not None}
    counts = {len(values) for values in given.values()}
    if len(counts) != 1:
        options = _listing([f"--{name.replace('_', '-')}" for name in given])
        found = _listing([str(len(values)) for values in given.values()])
        fail(f"{prog}: {options} need one entry per run; got {found}")
    return counts.pop()


def _listing(words: list[str]) -> str:
    """'a, b and c'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
