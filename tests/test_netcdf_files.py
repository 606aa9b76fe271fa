"""The NetCDF files diffmem writes: CF-valid (cfchecker), integer indices and counts, compressed and
chunked, openable lazily, and the cube stage's lazy combine equal to reading everything first."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import xarray as xr

from diffmem import names
from diffmem.config import ScoreConfig
from diffmem.io import INTEGER_FILL, NETCDF_ENGINE, atomic_to_netcdf, chunk_shape, read_netcdf_raw
from diffmem.stages import cube as cube_stage
from diffmem.stages import fit as fit_stage
from diffmem.stages.score import score_run

UDUNITS = ("the CF checker needs cfchecker (pip install -e '.[test]') and the UDUNITS-2 C library: "
           "apt-get install libudunits2-0 (Debian/Ubuntu; conda: udunits2)")
TIMES = ("created", "date_created", "history")  # global attributes that differ between two runs of a stage
# CF errors fit.nc is known to have, by variable: none since its string-valued coordinates (bound,
# normalization) are stored as character-array labels (diffmem.fitfile); add one here only with its reason.
KNOWN_FIT_ERRORS: dict[str, tuple[str, ...]] = {}


def _scores(tmp_path: Path, *, n: int, seed: int, steps: list[int], pool: np.ndarray, test: np.ndarray,
            rng: np.random.Generator) -> xr.Dataset:
    """A per-run scores.nc of `score_run` whose samples copy more training points at later steps."""
    pool_index = np.random.default_rng(seed).permutation(pool.shape[0])[:n]
    train = pool[pool_index]
    files = {}
    for k, step in enumerate(steps):
        x = rng.standard_normal((6, pool.shape[1])).astype(np.float32) + 20.0  # far from every training point
        x[:k] = train[rng.integers(0, n, k)]
        files[str(step)] = str(tmp_path / f"n{n}_s{seed}_step{step}.npy")
        np.save(files[str(step)], x)
    manifest = {"n": n, "seed": seed, "steps": steps, "files": files}
    return score_run(manifest, train, pool_index, test, cfg=ScoreConfig(num_bootstrap=5), device="cpu", log=lambda m: None)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> SimpleNamespace:
    """Per-run scores.nc (per-sample and per-training-example variables) and train_metrics.nc of n = 4, 8
    and seeds 0, 1, n = 8 on a longer step grid, so the cube pads both train_index and step; and the cube
    and fit the stages' main() build from them."""
    tmp = tmp_path_factory.mktemp("netcdf")
    rng = np.random.default_rng(0)
    pool = (rng.standard_normal((16, 5)) * 3).astype(np.float32)
    test = rng.standard_normal((10, 5)).astype(np.float32)
    scores, metrics = {}, []
    for n, steps in ((4, [0, 10, 100]), (8, [0, 10, 100, 1000])):
        for seed in (0, 1):
            scores[n, seed] = tmp / f"n{n}_s{seed}_scores.nc"
            atomic_to_netcdf(_scores(tmp, n=n, seed=seed, steps=steps, pool=pool, test=test, rng=rng), scores[n, seed])
            loss = 1 / np.sqrt(1.0 + np.array(steps))
            metrics.append(tmp / f"n{n}_s{seed}_train_metrics.nc")
            atomic_to_netcdf(names.annotate(xr.Dataset(
                {names.TRAIN_LOSS: ((names.STEP,), loss), names.TEST_LOSS: ((names.STEP,), 1.2 * loss)},
                coords={names.STEP: np.array(steps), names.N: n, names.SEED: seed},
                attrs={"trajectory_hash": f"{n}-{seed}"})), metrics[-1])
    args = ["--scores", *map(str, scores.values()), "--train-metrics", *map(str, metrics), "--experiment", "smoke"]
    cube, in_memory, fit = tmp / "cube.nc", tmp / "cube_in_memory.nc", tmp / "fit.nc"
    cube_stage.main([*args, "--lazy", "--out", str(cube)])  # what inputs over IN_MEMORY_MAX_BYTES get
    cube_stage.main([*args, "--in-memory", "--out", str(in_memory)])  # what these small ones get by default
    fit_stage.main(["--cube", str(cube), "--fit-cfg", json.dumps({"num_bootstrap": 20}), "--out", str(fit)])
    return SimpleNamespace(scores=scores, cube=cube, in_memory=in_memory, fit=fit)


def _cf_checker(tmp_path: Path, monkeypatch):
    try:
        from cfchecker import cfchecks
    except (ImportError, OSError) as exc:  # cfunits loads libudunits2 on import
        pytest.skip(f"{UDUNITS} ({exc})")
    real = cfchecks.CFChecker.chkValuesMonotonic

    def monotonic(self, name):  # 4.1.0 subtracts strings here (TypeError); report it as the error it is
        if self.f.variables[name].dtype is str:
            self._add_error("string-valued coordinate variable", name, code="5")
        else:
            real(self, name)

    monkeypatch.setattr(cfchecks.CFChecker, "chkValuesMonotonic", monotonic)
    # empty tables instead of cfconventions.org's (no network in CI): no variable has a standard_name,
    # area_type or region; one that gets one must then be checked against the real standard name table
    tables = {}
    for key, root in (("cfStandardNamesXML", "standard_name_table"), ("cfAreaTypesXML", "area_type_table"),
                      ("cfRegionNamesXML", "standardized_region_list")):
        tables[key] = tmp_path / f"{root}.xml"
        tables[key].write_text(f"<{root}><version_number>0</version_number><last_modified>-</last_modified>"
                               f"<date>-</date></{root}>")
    return cfchecks.CFChecker(**{k: str(v) for k, v in tables.items()}, version="1.8", silent=True)


def _messages(checker, path: Path) -> dict[str, dict[str, list[str]]]:
    """{"ERROR"/"WARN"/"FATAL": {variable or "global": messages}} of one file, empty lists left out."""
    results = checker.checker(str(path))
    out: dict[str, dict[str, list[str]]] = {"FATAL": {}, "ERROR": {}, "WARN": {}}
    for where, found in [("global", results["global"]), *results["variables"].items()]:
        for level in out:
            if found[level]:
                out[level][where] = found[level]
    return out


def _grouped_messages(checker, path: Path, tmp_path: Path) -> dict[str, dict[str, list[str]]]:
    """`_messages` of the root group and of every group ("<group>/<variable>"): cfchecker 4.1.0 reads
    the root group only, so each group is checked as a file of its own, with the coordinates it
    inherits and the root's global attributes."""
    found = _messages(checker, path)
    with xr.open_datatree(path, engine=NETCDF_ENGINE) as tree:
        for node in tree.subtree:
            if node.path == "/":
                continue
            flat = tmp_path / f"group_{node.name}.nc"
            # as stored: the encoding each variable was read with (compression, labels as characters)
            node.to_dataset(inherit=True).assign_attrs(tree.attrs).to_netcdf(flat, engine=NETCDF_ENGINE)
            for level, by_variable in _messages(checker, flat).items():
                found[level].update({f"{node.name}/{var}": messages for var, messages in by_variable.items()})
    return found


def test_cube_fit_and_per_run_files_pass_the_cf_checker(smoke, tmp_path, monkeypatch):
    checker = _cf_checker(tmp_path, monkeypatch)
    cube = _messages(checker, smoke.cube)
    assert cube == {"FATAL": {}, "ERROR": {}, "WARN": {}}, cube
    fit = _grouped_messages(checker, smoke.fit, tmp_path)
    assert not fit["FATAL"] and not fit["WARN"], fit
    unknown = {var: errs for var, errs in fit["ERROR"].items()
               if not all(e.startswith(KNOWN_FIT_ERRORS.get(var.split("/")[-1], ("no error",))) for e in errs)}
    assert not unknown, unknown
    assert {var.split("/")[-1] for var in fit["ERROR"]} == set(KNOWN_FIT_ERRORS), \
        "a known fit.nc error is gone: remove it from KNOWN_FIT_ERRORS"
    # per-run files carry no global attributes beyond their provenance, so no Conventions either
    run = _messages(checker, smoke.scores[8, 0])
    assert run == {"FATAL": {}, "ERROR": {}, "WARN": {"global": ["(2.6.1): No 'Conventions' attribute present"]}}, run


def test_every_units_string_is_a_udunits_unit():
    try:
        from cfunits import Units
    except (ImportError, OSError) as exc:
        pytest.skip(f"{UDUNITS} ({exc})")
    bad = {var: attrs["units"] for var, attrs in names.ATTRS.items() if not Units(attrs["units"]).isvalid}
    assert not bad, bad
    assert Units(names.TAU_UNITS).isvalid


def test_indices_and_counts_stay_integers_on_disk_and_read_back_as_nan_padded_floats(smoke):
    with h5py.File(smoke.cube) as h5:
        for var in names.INTEGER_VARIABLES:
            assert h5[var].dtype == np.int32 and h5[var].attrs["_FillValue"] == INTEGER_FILL, var
        # n and seed are dimensions of the cube: no variable names them as auxiliary coordinates
        stray = {var: h5[var].attrs["coordinates"] for var in h5 if "coordinates" in h5[var].attrs}
        assert not stray, stray
    with xr.open_dataset(smoke.cube, engine=NETCDF_ENGINE, mask_and_scale=False) as raw:
        small = raw[names.COPY_COUNT].sel({names.N: 4, names.SEED: 0}).values
        assert (small[4:] == INTEGER_FILL).all() and (small[:4] >= 0).all()
        nearest = raw[names.NEAREST].sel({names.N: 4, names.SEED: 1, names.STEP: 1000}).values
        assert (nearest == INTEGER_FILL).all()  # n = 4 has no checkpoint at step 1000
    with xr.open_dataset(smoke.cube, engine=NETCDF_ENGINE) as cube:
        for var in names.INTEGER_VARIABLES:
            assert cube[var].dtype == np.float64, var
        small = cube[names.COPY_COUNT].sel({names.N: 4, names.SEED: 0}).values
        assert np.isnan(small[4:]).all() and not np.isnan(small[:4]).any()
        assert np.isnan(cube[names.NEAREST].sel({names.N: 4, names.STEP: 1000}).values).all()
        assert not np.isnan(cube[names.NEAREST].sel({names.N: 8}).values).any()
    with xr.open_dataset(smoke.scores[4, 0], engine=NETCDF_ENGINE) as run:
        np.testing.assert_array_equal(run[names.COPY_COUNT].values, small[:4])


def test_large_variables_are_compressed_in_chunks_along_step(tmp_path, rng):
    dims = (names.N, names.SEED, names.STEP, names.SAMPLE)
    ds = xr.Dataset({names.D1: (dims, rng.random((2, 2, 100, 5000)).astype(np.float32)),
                     names.NEAREST: (dims, rng.integers(0, 10**5, (2, 2, 100, 5000))),
                     names.F_MEM: (dims[:3], rng.random((2, 2, 100)))},
                    coords={names.STEP: np.arange(100), names.SAMPLE: np.arange(5000)})
    path = tmp_path / "big.nc"
    atomic_to_netcdf(ds, path)
    with h5py.File(path) as h5:
        for var in (names.D1, names.NEAREST):
            assert h5[var].compression == "gzip" and h5[var].shuffle, var
            assert h5[var].chunks == (1, 1, 2**20 // (4 * 5000), 5000), var  # one run, as many steps as fit 1 MiB
        assert h5[names.F_MEM].chunks is None  # 3.1 KiB: a chunk index would cost more than zlib saves
    with xr.open_dataset(path, engine=NETCDF_ENGINE) as back:
        np.testing.assert_array_equal(back[names.NEAREST].values, ds[names.NEAREST].values)
        np.testing.assert_array_equal(back[names.D1].values, ds[names.D1].values)


def test_the_raw_reader_gives_what_xarray_reads_and_refuses_encoded_variables(tmp_path, rng):
    # the sampling stage reads train_metrics.nc's steps, n, seed and attributes this way (without xarray)
    ds = xr.Dataset({names.F_MEM: ((names.STEP,), rng.random(5)),
                     names.NEAREST: ((names.STEP, names.SAMPLE), rng.integers(0, 9, (5, 3)))},
                    coords={names.STEP: np.array([0, 1, 3, 10, 4000], dtype=np.int64), names.N: 16, names.SEED: 2},
                    attrs={"trajectory_hash": "84b919e495c9", "checkpoint_dir": "runs/n16_seed2/checkpoints"})
    path = tmp_path / "run.nc"
    atomic_to_netcdf(ds, path)
    attrs, values = read_netcdf_raw(path, [names.STEP, names.N, names.SEED, names.F_MEM])
    with xr.open_dataset(path, engine=NETCDF_ENGINE) as back:
        assert attrs == back.attrs
        for name, value in values.items():
            assert value.dtype == back[name].dtype and np.array_equal(value, back[name].values), name
    assert values[names.STEP].tolist() == [0, 1, 3, 10, 4000] and int(values[names.N]) == 16
    with pytest.raises(ValueError, match="CF-encoded"):  # int32 with _FillValue on disk, float64 with NaN in xarray
        read_netcdf_raw(path, [names.NEAREST])


def test_chunk_shape_fills_trailing_dimensions_first():
    assert chunk_shape((6, 5, 60, 10_000), 4) == (1, 1, 26, 10_000)
    assert chunk_shape((6, 5, 60), 8) == (6, 5, 60)
    assert chunk_shape((3, 300_000), 4) == (1, 262_144)
    assert chunk_shape((4, 0, 7), 8) == (4, 1, 7)


def test_cube_and_per_run_files_open_lazily_with_the_same_values(smoke):
    import dask.array

    with (xr.open_dataset(smoke.cube, engine=NETCDF_ENGINE, chunks={}) as lazy,
          xr.open_dataset(smoke.cube, engine=NETCDF_ENGINE) as eager):
        assert all(isinstance(var.data, dask.array.Array) for var in lazy.data_vars.values())
        xr.testing.assert_identical(lazy.load(), eager.load())
        cube = eager.load()
    paths = [smoke.scores[8, seed] for seed in (0, 1)]
    with xr.open_mfdataset(paths, engine=NETCDF_ENGINE, combine="nested", concat_dim=names.SEED,
                           data_vars="all", coords="minimal", compat="override", join="exact") as runs:
        assert isinstance(runs[names.D1].data, dask.array.Array)
        at_8 = cube.sel({names.N: 8})
        for var in (names.F_MEM, names.D1, names.RATIO, names.NEAREST, names.COPY_COUNT, names.FIRST_COPY_STEP):
            xr.testing.assert_identical(runs[var].load(), at_8[var])


def test_the_files_read_the_same_with_h5netcdf_as_with_the_engine_that_wrote_them(smoke):
    """diffmem writes with netCDF-C (NETCDF_ENGINE, for speed); a notebook may open the files with h5netcdf."""
    assert NETCDF_ENGINE == "netcdf4"
    for path in [*smoke.scores.values(), smoke.cube, smoke.in_memory]:
        with (xr.open_dataset(path, engine=NETCDF_ENGINE) as ours,
              xr.open_dataset(path, engine="h5netcdf") as theirs):
            xr.testing.assert_identical(ours.load(), theirs.load())
            for name, var in ours.variables.items():
                assert var.dtype == theirs[name].dtype, (path, name)
                assert {k: type(v) for k, v in var.attrs.items()} == \
                    {k: type(v) for k, v in theirs[name].attrs.items()}, (path, name)
    with (xr.open_datatree(smoke.fit, engine=NETCDF_ENGINE) as ours,
          xr.open_datatree(smoke.fit, engine="h5netcdf") as theirs):
        xr.testing.assert_identical(ours.load(), theirs.load())


def test_the_lazy_cube_stage_writes_what_reading_everything_first_writes(smoke):
    with (xr.open_dataset(smoke.cube, engine=NETCDF_ENGINE) as lazy,
          xr.open_dataset(smoke.in_memory, engine=NETCDF_ENGINE) as eager):
        lazy, eager = lazy.load(), eager.load()
    for ds in (lazy, eager):
        for key in TIMES:
            ds.attrs.pop(key)
    xr.testing.assert_identical(lazy, eager)
    assert {k: v.dtype for k, v in lazy.variables.items()} == {k: v.dtype for k, v in eager.variables.items()}


def test_the_cube_stage_reads_small_inputs_into_memory_and_large_ones_lazily(smoke, monkeypatch):
    paths = [str(p) for p in smoke.scores.values()]
    assert cube_stage.read_in_memory(paths)
    assert not cube_stage.read_in_memory(paths, lazy=True)
    monkeypatch.setattr(cube_stage, "IN_MEMORY_MAX_BYTES", sum(os.path.getsize(p) for p in paths) - 1)
    assert not cube_stage.read_in_memory(paths)
    assert cube_stage.read_in_memory(paths, in_memory=True)
