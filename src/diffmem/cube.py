"""Combine the per-(n, seed) files into one cube indexed by (n, seed, step[, sample]).

Run: `diffmem cube --scores a/scores.nc b/scores.nc --train-metrics a/train_metrics.nc ...
--out results/<experiment>/cube.nc` (its config_hash attribute: a hash of the inputs' attributes)
"""

from __future__ import annotations

import argparse
import json
import sys

import xarray as xr

from diffmem import names
from diffmem.config import stable_hash
from diffmem.io import NETCDF_ENGINE, atomic_to_netcdf, cf_global_attrs, provenance
from diffmem.copies import split_per_example


def _expand(ds: xr.Dataset) -> xr.Dataset:
    """Promote the scalar n and seed coordinates of a per-run file to dimensions."""
    return ds.expand_dims({names.N: [int(ds[names.N])], names.SEED: [int(ds[names.SEED])]})


def combine_runs(parts: list[xr.Dataset], *, attrs: dict) -> xr.Dataset:
    """Merge per-run datasets (each with scalar n and seed) into a (n, seed, step, ...) cube.

    Runs with different step grids are outer-joined on step (missing values NaN)."""
    expanded = [_expand(p) for p in parts]
    expanded, per_example = split_per_example(expanded)  # train_index variables (copies.py)
    # variable attrs (e.g. f_mem's ratio_threshold) agree across runs and survive; per-run global
    # attrs (state folders) conflict and are dropped, then replaced by the cube's provenance
    cube = xr.combine_by_coords(expanded, join="outer", compat="no_conflicts", combine_attrs="drop_conflicts")
    if per_example is not None:
        cube = cube.merge(per_example, join="outer", compat="no_conflicts", combine_attrs="drop_conflicts")
    cube = cube.transpose(names.N, names.SEED, names.STEP, ...)
    cube.attrs = dict(attrs)
    if names.DELTA in cube:
        # P(Delta > 0) over seeds (Halder & Pehlevan): near 0 when memorizing, near 1 when generalizing
        valid = cube[names.DELTA].notnull()
        cube[names.P_DELTA_POS] = (cube[names.DELTA] > 0).where(valid).mean(names.SEED)
    return names.annotate(cube)


def inputs_hash(parts: list[xr.Dataset]) -> str:
    """Provenance of a cube from its inputs' own attributes (each run's trajectory hash, state folder,
    ratio threshold, metric settings, ...), not from config sections: what the files say they are."""
    records = [{"attrs": {k: v for k, v in part.attrs.items() if k != "created"},
                "vars": {name: dict(var.attrs) for name, var in part.variables.items()}} for part in parts]
    return stable_hash(sorted(json.dumps(r, sort_keys=True, default=str) for r in records))


def load_parts(paths: list[str]) -> list[xr.Dataset]:
    parts = []
    for path in paths:
        with xr.open_dataset(path, engine=NETCDF_ENGINE) as ds:
            parts.append(ds.load())
    return parts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="diffmem cube", description=__doc__)
    parser.add_argument("--scores", nargs="*", default=[], help="per-run scores.nc files")
    parser.add_argument("--train-metrics", nargs="*", default=[],
                        help="per-run train_metrics.nc (trained families) or rf_metrics.nc (random_features)")
    parser.add_argument("--closed-form", action="store_true", help="mark the cube as a closed-form family's (step 0 only)")
    parser.add_argument("--quality", nargs="*", default=[], help="per-run quality.nc files")
    parser.add_argument("--twin", nargs="*", default=[], help="per-run twin.nc files (data.twin)")
    parser.add_argument("--config-hash", default=None, help="default: a hash of the inputs' attributes")
    parser.add_argument("--experiment", default="")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not args.scores and not args.train_metrics:
        from diffmem.io import fail

        fail("diffmem cube: give per-run files with --scores and/or --train-metrics")
    parts = (load_parts(args.scores) + load_parts(args.train_metrics) + load_parts(args.quality)
             + load_parts(args.twin))
    attrs = {**provenance(args.config_hash or inputs_hash(parts)), "experiment": args.experiment,
             **cf_global_attrs(title=f"diffmem cube of experiment {args.experiment or '?'}",
                               summary="Memorization (f_mem, d1/d2 per sample), losses and sample quality of "
                                       "diffusion models over training-set size n, seed and optimizer step",
                               command=f"diffmem cube --experiment {args.experiment} ({len(args.scores)} scores, "
                                       f"{len(args.train_metrics)} train-metrics, {len(args.quality)} quality files)")}
    if args.closed_form:
        attrs["closed_form"] = "closed-form model: no training, its single checkpoint is recorded as step 0"
    cube = combine_runs(parts, attrs=attrs)
    atomic_to_netcdf(cube, args.out)
    print(f"[cube] {dict(cube.sizes)} -> {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
