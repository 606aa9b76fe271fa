"""The costs stage: where an experiment's time went, per stage, from its jobs' benchmark files and logs.

For each stage (train, sample, score, quality, cube, fit, plot, ...): the number of jobs, their summed
wall and CPU seconds, the largest peak memory, and the start-up (interpreter and imports, before the
stage began its work) summed over the jobs and as a share of their wall time. What is measured how is
in `diffmem.costs`.

Run: `diffmem costs results/digits [results/other ...]`
"""

from __future__ import annotations

import sys
from pathlib import Path

from diffmem.costs import format_table, job_costs, stage_costs
from diffmem.io import fail
from diffmem.stages import stage_parser


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem costs", __doc__, "diffmem.stages.costs")
    parser.add_argument("experiments", nargs="+", help="results/<experiment> folders")
    args = parser.parse_args(argv)
    for folder in args.experiments:
        if not (Path(folder) / "benchmarks").is_dir():
            fail(f"{folder} has no benchmarks/ folder (run the workflow for this experiment first)")
        jobs = job_costs(folder)
        print(format_table(stage_costs(jobs), title=f"{folder}: {len(jobs)} jobs (wall and CPU summed over jobs)"))


if __name__ == "__main__":
    main(sys.argv[1:])
