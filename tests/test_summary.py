"""`diffmem summary`: the known fit variables, and unknown (future) diagnostics printed generically."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from diffmem import names
from diffmem.config import FitConfig
from diffmem.onsets import fit_onsets
from diffmem.stages.summary import main, summarize


def synthetic_cube() -> xr.Dataset:
    """f_mem steps from 0 to 0.5 at step = 10 n (tau_mem exactly linear in n), two seeds."""
    ns, seeds, steps = [16, 32, 64], [0, 1], np.array([0, 10, 30, 100, 300, 1000, 3000])
    f = np.zeros((3, 2, steps.size))
    for i, n in enumerate(ns):
        f[i, :, :] = np.where(steps >= 10 * n, 0.5, 0.0)
    f[2, 1, :] = 0.0  # n = 64, seed 1 never memorizes: censored
    return xr.Dataset({names.F_MEM: ((names.N, names.SEED, names.STEP), f)},
                      coords={names.N: ns, names.SEED: seeds, names.STEP: steps})


def test_summary_prints_known_variables_and_new_diagnostics():
    fit = fit_onsets(synthetic_cube(), FitConfig(num_bootstrap=50), rng=np.random.default_rng(0))
    # stand-ins for diagnostics another stage may add: a scalar and a per-n variable, unknown to summary.py
    fit["lack_of_fit_pvalue"] = xr.DataArray(0.4321, attrs={"long_name": "lack-of-fit p-value"})
    fit["local_slope"] = xr.DataArray([0.9, 1.1, np.nan], dims=(names.N,), coords={names.N: fit[names.N]})
    fit.attrs["power_law_ok"] = "yes"
    text = summarize(fit, title="synthetic")
    b = float(fit[names.TAU_MEM_EXPONENT])
    lo, hi = fit[names.TAU_MEM_EXPONENT_CI].values
    assert f"b = {b:.4g} [{lo:.4g}, {hi:.4g}] (95 % CI)" in text
    assert "n=     64:" in text and "(1/2 censored)" in text
    assert "n*" in text and "final f_mem" in text
    assert "lack_of_fit_pvalue (lack-of-fit p-value): 0.4321" in text
    assert "local_slope: [0.9, 1.1, n/a]" in text
    assert "attr power_law_ok: yes" in text
    assert "tau_gen: not in the fit" in text


def test_summary_cli_reads_an_experiment_folder_and_fails_in_one_line(tmp_path, capsys):
    fit = fit_onsets(synthetic_cube(), FitConfig(num_bootstrap=20), rng=np.random.default_rng(0))
    exp = tmp_path / "exp"
    exp.mkdir()
    with pytest.raises(SystemExit, match="^2$"):  # fail(): a user error, its cause on stderr
        main([str(exp)])
    assert "fit.nc does not exist" in capsys.readouterr().err
    fit.to_netcdf(exp / "fit.nc", engine="h5netcdf")
    main([str(exp)])
    out = capsys.readouterr().out
    assert "tau_mem (f_mem >= 0.1) per n" in out and "n: 16, 32, 64; seeds: 0, 1" in out


def test_summary_of_a_sweep_has_one_block_per_value():
    fits = [fit_onsets(synthetic_cube(), FitConfig(num_bootstrap=20), rng=np.random.default_rng(0)) for _ in range(2)]
    fits[1][names.F_MEM_FINAL] = fits[1][names.F_MEM_FINAL] * 0 + 0.125
    fit = xr.concat(fits, dim=xr.DataArray([16, 32], dims=names.WIDTH, name=names.WIDTH))
    text = summarize(fit)
    assert "-- width = 16 --" in text and "-- width = 32 --" in text
    assert text.count("n=     16: 0.125 +- 0") == 1
