"""fit.nc in groups (diffmem.fitfile): the fit stage's flat Dataset survives the round trip unchanged,
and a reader finds each readout's fit under its own group with short names."""

import json

import numpy as np
import xarray as xr
from test_netcdf_metadata import scores_part

from diffmem import names
from diffmem.fitfile import group_of, read_fit, write_fit
from diffmem.io import NETCDF_ENGINE, atomic_to_netcdf
from diffmem.stages import cube as cube_stage
from diffmem.stages import fit as fit_stage


def fitted(tmp_path, rng):
    paths = []
    for n in (32, 64, 128):
        for seed in (0, 1):
            paths.append(str(tmp_path / f"scores_{n}_{seed}.nc"))
            atomic_to_netcdf(names.annotate(scores_part(n, seed, rng)), paths[-1])
    cube_stage.main(["--scores", *paths, "--experiment", "demo", "--out", str(tmp_path / "cube.nc")])
    fit_stage.main(["--cube", str(tmp_path / "cube.nc"), "--fit-cfg", json.dumps({"num_bootstrap": 20}),
                    "--out", str(tmp_path / "fit.nc")])
    return tmp_path / "fit.nc"


def test_the_fit_stage_writes_groups_a_reader_can_walk(tmp_path, rng):
    path = fitted(tmp_path, rng)
    flat = read_fit(path)
    with xr.open_datatree(path, engine=NETCDF_ENGINE) as tree:
        assert set(tree.children) == {names.TAU_MEM, names.TAU_MEM_LEVELS}  # no quality: no tau_gen groups
        tau_mem = tree[names.TAU_MEM].to_dataset()
        # tau_mem's fit in one place, the diagnostics without the prefix
        assert set(tau_mem.data_vars) == {names.TAU_MEM, *names.DIAGNOSTICS}
        assert float(tau_mem["exponent"]) == float(flat[names.TAU_MEM_EXPONENT])
        np.testing.assert_array_equal(tau_mem[names.TAU_MEM].values, flat[names.TAU_MEM].values)
        assert tau_mem["lof_pvalue"].attrs["long_name"] == flat[names.TAU_MEM_LOF_PVALUE].attrs["long_name"]
        # the root holds what is per n and no readout's fit; the global attributes stay at the root
        root = tree.to_dataset(inherit=False)
        assert names.F_MEM_FINAL in root and not any(group_of(str(v)) for v in root.data_vars)
        assert root.attrs["tau_mem_threshold"] == flat.attrs["tau_mem_threshold"]
        assert len(root.data_vars) < 10 < len(flat.data_vars)
    with xr.open_dataset(path, engine=NETCDF_ENGINE) as plain:  # a plain open gives the root group
        assert names.F_MEM_FINAL in plain and names.TAU_MEM_EXPONENT not in plain


def test_write_then_read_gives_the_flat_fit_back_exactly(tmp_path, rng):
    path = fitted(tmp_path, rng)
    flat = read_fit(path)
    write_fit(flat, tmp_path / "again.nc")
    xr.testing.assert_identical(read_fit(tmp_path / "again.nc"), flat)
    assert {str(v) for v in flat.data_vars} >= {names.TAU_MEM, names.TAU_MEM_EXPONENT_CI, names.F_MEM_FINAL}


def test_group_of_splits_only_known_diagnostics():
    assert group_of("tau_mem_levels_exponent_ci") == ("tau_mem_levels", "exponent_ci")
    assert group_of("tau_mem") == ("tau_mem", "tau_mem")
    assert group_of("tau_gen_tolerances") == ("tau_gen_tolerances", "tau_gen")
    assert group_of("tau_mem_times_width_collapse_pvalue") is None  # not a diagnostic: stays at the root
    assert group_of(names.F_MEM_FINAL) is None and group_of(names.N_STAR) is None


def test_a_file_without_groups_reads_as_it_is(tmp_path):
    ds = xr.Dataset({"x": ("n", np.arange(3.0))}, coords={"n": [1, 2, 3]})
    atomic_to_netcdf(ds, tmp_path / "flat.nc")
    xr.testing.assert_identical(read_fit(tmp_path / "flat.nc"), ds)
