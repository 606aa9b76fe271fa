"""The quality stage through the real workflow on tiny synthetic data: every new cube variable."""

from __future__ import annotations

import shutil

import pytest
import xarray as xr
from test_figures import check_quality_figures, check_tau_gen_levels
from test_workflow import REPO, snakemake

from diffmem.figures import experiment
from diffmem.fitfile import from_tree, read_fit

pytestmark = pytest.mark.snakemake


def test_synthetic_quality_variables(tmp_path, drawn):
    shutil.copy(REPO / "tests" / "smoke_gaussian.yaml", tmp_path / "config.yaml")
    snakemake(tmp_path)
    exp = tmp_path / "results_smoke" / "smoke_gauss"
    with xr.open_dataset(exp / "cube.nc", engine="h5netcdf") as cube:
        for var in ("fd_data", "kid_data", "e_tg", "e_og", "delta", "loglik", "energy_distance"):
            assert cube[var].dims == ("n", "seed", "step"), var
            assert cube[var].attrs["units"] and cube[var].attrs["long_name"], var
        assert cube["fd_data"].attrs["num_samples"] == 64 and cube["fd_data"].attrs["num_reference"] == 200
        assert cube["p_delta_pos"].dims == ("n", "step")
        assert float(cube["p_delta_pos"].min()) >= 0 and float(cube["p_delta_pos"].max()) <= 1
        assert cube["denoiser_err_pop"].dims == ("n", "seed", "step", "probe_sigma")
        assert (cube["denoiser_err_emp"] > 0).all()
        assert float(cube["e_tg"].min()) >= -0.05 and float(cube["e_tg"].max()) <= 1.05
        assert "loglik_true" in cube
    with xr.open_datatree(exp / "fit.nc", engine="h5netcdf") as tree:
        fit = from_tree(tree)
        assert fit["tau_gen"].dims == ("n", "seed")
        assert "tau_gen_exponent" in fit and fit["tau_gen_exponent_ci"].sizes["bound"] == 2
        assert fit.attrs["tau_gen_metric"] == "loglik"
    # the quality figures show the cube and the fit (redrawn here one by one, d = 4, and
    # the same pixels as the workflow's files)
    cube, fit = xr.load_dataset(exp / "cube.nc", engine="h5netcdf"), read_fit(exp / "fit.nc")
    figs = drawn.watch(experiment)
    for name in ("timescales", "quality_vs_step", "loss_gap", "p_delta_pos", "tau_gen_levels"):
        with drawn.as_a_new_process():
            experiment.make_quality_figures(cube, fit, tmp_path / "redrawn", title="smoke_gauss", data_dim=4, only={name})
        assert drawn.same_pixels(tmp_path / "redrawn" / f"{name}.png", exp / "figures" / f"{name}.png"), name
    check_quality_figures(figs, cube, fit, data_dim=4)
    check_tau_gen_levels(figs["tau_gen_levels.png"], fit)
