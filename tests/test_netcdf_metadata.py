"""The cube and fit files carry CF / ACDD global attributes, and fractions have units "1".

Whether the units are UDUNITS units and the files pass the CF checker: tests/test_netcdf_files.py."""

import json

import numpy as np
import xarray as xr

from diffmem import names
from diffmem.io import NETCDF_ENGINE, atomic_to_netcdf
from diffmem.stages import cube as cube_stage
from diffmem.stages import fit as fit_stage

FRACTIONS = (names.F_MEM, names.F_MEM_SE, names.RATIO, names.F_MEM_FINAL, names.F_MEM_FINAL_SE)
ACDD = ("Conventions", "title", "summary", "keywords", "source", "references", "date_created", "history")


def scores_part(n, seed, rng):
    steps = np.array([0, 10, 100, 1000])
    f = np.clip(np.array([0.0, 0.0, 0.1, 0.6]) * 32 / n + 0.01 * rng.random(4), 0, 1)
    return xr.Dataset(
        {names.F_MEM: ((names.STEP,), f), names.F_MEM_SE: ((names.STEP,), 0.01 + 0 * f),
         names.RATIO: ((names.STEP, names.SAMPLE), rng.random((4, 6)).astype(np.float32))},
        coords={names.STEP: steps, names.SAMPLE: np.arange(6), names.N: n, names.SEED: seed})


def test_cube_and_fit_files_carry_cf_acdd_attributes(tmp_path, rng):
    paths = []
    for n in (32, 64):
        for seed in (0, 1):
            paths.append(str(tmp_path / f"scores_{n}_{seed}.nc"))
            atomic_to_netcdf(names.annotate(scores_part(n, seed, rng)), paths[-1])
    cube_path, fit_path = tmp_path / "cube.nc", tmp_path / "fit.nc"
    cube_stage.main(["--scores", *paths, "--experiment", "demo", "--config-hash", "abc", "--out", str(cube_path)])
    fit_stage.main(["--cube", str(cube_path), "--fit-cfg", json.dumps({"num_bootstrap": 20}), "--out", str(fit_path)])
    with xr.open_dataset(cube_path, engine=NETCDF_ENGINE) as cube, xr.open_dataset(fit_path, engine=NETCDF_ENGINE) as fit:
        for ds in (cube, fit):
            missing = [key for key in ACDD if not str(ds.attrs.get(key, "")).strip()]
            assert not missing, f"missing global attributes {missing}"
            assert "CF-" in ds.attrs["Conventions"] and "ACDD-1.3" in ds.attrs["Conventions"]
            assert "arXiv:2505.17638" in ds.attrs["references"] and "arXiv:2501.15785" in ds.attrs["references"]
            assert "demo" in ds.attrs["title"]
            for var in FRACTIONS:
                if var in ds:
                    assert ds[var].attrs.get("units") == "1", var
        assert {v for v in FRACTIONS if v in cube} == {names.F_MEM, names.F_MEM_SE, names.RATIO}
        assert {v for v in FRACTIONS if v in fit} == {names.F_MEM_FINAL, names.F_MEM_FINAL_SE}
        # the fit's history continues the cube's: one line per stage, oldest first
        cube_lines, fit_lines = cube.attrs["history"].splitlines(), fit.attrs["history"].splitlines()
        assert len(cube_lines) == 1 and "diffmem cube" in cube_lines[0]
        assert fit_lines[:-1] == cube_lines and "diffmem fit" in fit_lines[-1]
        # every data variable and coordinate still says what it is, in the units names.ATTRS gives (UDUNITS
        # strings, checked in test_netcdf_files.py)
        for ds in (cube, fit):
            for var in ds.variables:
                if var in names.ATTRS:
                    assert ds[var].attrs.get("long_name") and ds[var].attrs.get("units") == names.ATTRS[var]["units"], var
