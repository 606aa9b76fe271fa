"""The cube stage: combine the per-(n, seed) files into one cube indexed by (n, seed, step[, sample]).

Run: `diffmem cube --scores a/scores.nc b/scores.nc --train-metrics a/train_metrics.nc ...
--out results/<experiment>/cube.nc` (its config_hash attribute: a hash of the inputs' attributes)

Inputs of up to IN_MEMORY_MAX_BYTES on disk in all (the default grids': ~3.5 MB) are read into memory and
combined there; larger ones are opened lazily and the cube is written chunk by chunk, so memory stays near a
few chunks whatever the grid. `--lazy` and `--in-memory` force one way; both write the same cube
(benchmarks/bench_cube_memory.py compares the two). Lazily, dask's task graph over every variable of every
file costs the default cube ~3 of its ~9 CPU-seconds.
"""

from __future__ import annotations

import logging
import os
import sys

from diffmem.cube import combine_runs, inputs_hash, load_parts, open_parts
from diffmem.io import atomic_to_netcdf, cf_global_attrs, fail, provenance
from diffmem.log import configure
from diffmem.stages import stage_parser

log = logging.getLogger(__name__)

# on-disk size of all inputs up to which they are read into memory rather than opened lazily (in memory,
# the float32/float64 variables take ~2x their compressed size, the cube as much again)
IN_MEMORY_MAX_BYTES = 64 * 2**20


def read_in_memory(paths: list[str], *, in_memory: bool = False, lazy: bool = False) -> bool:
    """Whether the cube stage reads its inputs into memory: forced by `in_memory` or `lazy`, else when they
    are small (IN_MEMORY_MAX_BYTES)."""
    if in_memory or lazy:
        return in_memory
    return sum(os.path.getsize(path) for path in paths) <= IN_MEMORY_MAX_BYTES


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem cube", __doc__, "diffmem.stages.cube")
    parser.add_argument("--scores", nargs="*", default=[], help="per-run scores.nc files")
    parser.add_argument("--train-metrics", nargs="*", default=[],
                        help="per-run train_metrics.nc (trained families) or rf_metrics.nc (random_features)")
    parser.add_argument("--closed-form", action="store_true", help="mark the cube as a closed-form family's (step 0 only)")
    parser.add_argument("--quality", nargs="*", default=[], help="per-run quality.nc files")
    parser.add_argument("--twin", nargs="*", default=[], help="per-run twin.nc files (data.twin)")
    parser.add_argument("--config-hash", default=None, help="default: a hash of the inputs' attributes")
    parser.add_argument("--experiment", default="")
    parser.add_argument("--in-memory", action="store_true",
                        help="read every per-run file into memory before combining (the same cube, more memory; "
                             "the default for inputs of up to 64 MiB)")
    parser.add_argument("--lazy", action="store_true",
                        help="open the per-run files lazily and write the cube chunk by chunk (the same cube; "
                             "the default for inputs over 64 MiB)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not args.scores and not args.train_metrics:
        fail("diffmem cube: give per-run files with --scores and/or --train-metrics")
    if args.in_memory and args.lazy:
        fail("diffmem cube: give --in-memory or --lazy, not both")
    paths = [*args.scores, *args.train_metrics, *args.quality, *args.twin]
    read = load_parts if read_in_memory(paths, in_memory=args.in_memory, lazy=args.lazy) else open_parts
    parts = read(args.scores) + read(args.train_metrics) + read(args.quality) + read(args.twin)
    attrs = {**provenance(args.config_hash or inputs_hash(parts)), "experiment": args.experiment,
             **cf_global_attrs(title=f"diffmem cube of experiment {args.experiment or '?'}",
                               summary="Memorization (f_mem, d1/d2 per sample), losses and sample quality of "
                                       "diffusion models over training-set size n, seed and optimizer step",
                               command=f"diffmem cube --experiment {args.experiment} ({len(args.scores)} scores, "
                                       f"{len(args.train_metrics)} train-metrics, {len(args.quality)} quality files)")}
    if args.closed_form:
        attrs["closed_form"] = "closed-form model: no training, its single checkpoint is recorded as step 0"
    try:
        cube = combine_runs(parts, attrs=attrs)
        atomic_to_netcdf(cube, args.out)
    finally:
        for part in parts:
            part.close()
    log.info(f"{dict(cube.sizes)} -> {args.out}")


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
