"""The stages Snakemake calls, one module each, each with its `main(argv)`: `diffmem <stage> ...`.

A stage reads its inputs and config slice, calls the library (and the figures), and writes its
outputs atomically. The numerical library never imports a stage.
"""

from __future__ import annotations

import argparse

from diffmem.costs import mark_stage_start


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
