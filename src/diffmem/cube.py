"""Combine per-(n, seed) datasets into one cube indexed by (n, seed, step[, sample]).

The cube stage (`diffmem.stages.cube`) and the stages that stack their own parts call these.
"""

from __future__ import annotations

import json

import xarray as xr

from diffmem import names
from diffmem.config import stable_hash
from diffmem.copies import split_per_example
from diffmem.errors import ConfigError
from diffmem.io import NETCDF_ENGINE


def _expand(ds: xr.Dataset) -> xr.Dataset:
    """Promote the scalar n and seed coordinates of a per-run file to dimensions."""
    return ds.expand_dims({names.N: [int(ds[names.N])], names.SEED: [int(ds[names.SEED])]})


def combine_runs(parts: list[xr.Dataset], *, attrs: dict) -> xr.Dataset:
    """Merge per-run datasets (each with scalar n and seed) into a (n, seed, step, ...) cube.

    Runs with different step grids are outer-joined on step (missing values NaN). Parts opened lazily
    (`open_parts`) give a lazy cube: nothing is read until it is written or computed."""
    expanded = [_expand(p) for p in parts]
    expanded, per_example = split_per_example(expanded)  # train_index variables (copies.py)
    # variable attrs (e.g. f_mem's ratio_threshold) agree across runs and survive; per-run global
    # attrs (state folders) conflict and are dropped, then replaced by the cube's provenance
    cube = xr.combine_by_coords(expanded, join="outer", compat="no_conflicts", combine_attrs="drop_conflicts")
    if per_example is not None:
        cube = cube.merge(per_example, join="outer", compat="no_conflicts", combine_attrs="drop_conflicts")
    # a new dataset: how its parts were stored (their chunks, dtypes, `coordinates`) does not apply to it
    cube = cube.transpose(names.N, names.SEED, names.STEP, ...).drop_encoding()
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
    """The files, read into memory and closed."""
    parts = []
    for path in paths:
        with xr.open_dataset(path, engine=NETCDF_ENGINE) as ds:
            parts.append(ds.load())
    return parts


def open_parts(paths: list[str]) -> list[xr.Dataset]:
    """The files, opened lazily as dask arrays in their on-disk chunks; the caller closes them once
    what it built from them is written."""
    return [xr.open_dataset(path, engine=NETCDF_ENGINE, chunks={}) for path in paths]


def data_dim(cube: xr.Dataset) -> int:
    """d of a random-features cube (its scalar coordinate `dim`, or the attribute `d`)."""
    if names.DIM in cube.coords:
        return int(cube[names.DIM])
    if "d" in cube.attrs:
        return int(cube.attrs["d"])
    raise ConfigError("the cube has no data dimension (scalar coordinate 'dim' written by rf_run); "
                      "build it with diffmem.cube.combine_runs from rf_run outputs")
