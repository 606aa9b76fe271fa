import numpy as np
import xarray as xr

from diffmem import names
from diffmem.cube import combine_runs, load_parts
from diffmem.io import NETCDF_ENGINE, atomic_to_netcdf


def run_part(n, seed, steps, rng):
    return xr.Dataset(
        {names.F_MEM: ((names.STEP,), rng.random(len(steps))),
         names.RATIO: ((names.STEP, names.SAMPLE), rng.random((len(steps), 5)).astype(np.float32)),
         names.TRAIN_LOSS: ((names.STEP,), rng.random(len(steps)))},
        coords={names.STEP: np.array(steps), names.SAMPLE: np.arange(5), names.N: n, names.SEED: seed},
    )


def test_combine_and_netcdf_round_trip(tmp_path, rng):
    parts = [run_part(n, s, [0, 1, 10], rng) for n in (8, 16) for s in (0, 1)]
    cube = combine_runs(parts, attrs={"config_hash": "abc"})
    assert cube[names.F_MEM].dims == (names.N, names.SEED, names.STEP)
    assert cube[names.RATIO].dims == (names.N, names.SEED, names.STEP, names.SAMPLE)
    assert cube[names.F_MEM].attrs["units"] == "1" and "long_name" in cube[names.F_MEM].attrs
    np.testing.assert_array_equal(cube[names.F_MEM].sel(n=16, seed=1).values, parts[3][names.F_MEM].values)
    path = tmp_path / "cube.nc"
    atomic_to_netcdf(cube, path)
    with xr.open_dataset(path, engine=NETCDF_ENGINE) as back:
        xr.testing.assert_identical(back.load(), cube)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left behind


def test_different_step_grids_are_outer_joined(tmp_path, rng):
    parts = [run_part(8, 0, [0, 1, 10], rng), run_part(16, 0, [0, 1, 10, 100], rng)]
    paths = []
    for i, p in enumerate(parts):
        paths.append(tmp_path / f"{i}.nc")
        atomic_to_netcdf(p, paths[-1])
    cube = combine_runs(load_parts([str(p) for p in paths]), attrs={})
    assert list(cube[names.STEP].values) == [0, 1, 10, 100]
    assert np.isnan(float(cube[names.F_MEM].sel(n=8, seed=0, step=100)))


def test_atomic_writes_get_the_umask_mode_not_mkstemps_private_one(tmp_path):
    """Results on a shared filesystem stay readable to the group: 0o666 less the umask, as open() gives."""
    import os
    import stat

    from diffmem.io import atomic_savez, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_savez(tmp_path / "b.npz", x=np.zeros(2))
        os.umask(0o002)
        atomic_write_text(tmp_path / "c.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.npz").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "c.txt").stat().st_mode) == 0o664
