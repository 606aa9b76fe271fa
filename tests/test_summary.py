"""`diffmem summary`: the known fit variables, and unknown (future) diagnostics printed generically."""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr

from diffmem import names
from diffmem.config import FitConfig
from diffmem.onsets import fit_onsets
from diffmem.stages.summary import format_table, main, summarize


def synthetic_cube() -> xr.Dataset:
    """f_mem steps from 0 to 0.5 at step = 10 n (tau_mem exactly linear in n), two seeds."""
    ns, seeds, steps = [16, 32, 64], [0, 1], np.array([0, 10, 30, 100, 300, 1000, 3000])
    f = np.zeros((3, 2, steps.size))
    for i, n in enumerate(ns):
        f[i, :, :] = np.where(steps >= 10 * n, 0.5, 0.0)
    f[2, 1, :] = 0.0  # n = 64, seed 1 never memorizes: censored
    return xr.Dataset({names.F_MEM: ((names.N, names.SEED, names.STEP), f)},
                      coords={names.N: ns, names.SEED: seeds, names.STEP: steps})


def table(text: str, title: str) -> list[dict[str, str]]:
    """The table under the first line that starts with `title` (after its indent), as one dict per row
    {column header: cell}; cells are at least two spaces apart and hold no two spaces in a row."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(title))
    indent = " " * (len(lines[start]) - len(lines[start].lstrip()) + 2)
    header = re.split(r"\s{2,}", lines[start + 1].strip())
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith(indent):
            break
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(header), (header, line)
        rows.append(dict(zip(header, cells)))
    assert rows, f"no table under {title!r}"
    return rows


def row(rows: list[dict[str, str]], **key: str) -> dict[str, str]:
    (found,) = [r for r in rows if all(r[k] == v for k, v in key.items())]
    return found


def test_format_table_aligns_columns():
    text = format_table(["n", "name", "value"], [["16", "a", "0.5"], ["1024", "longer", "n/a"]])
    assert text.splitlines() == ["   n  name    value",
                                 "  16  a         0.5",
                                 "1024  longer    n/a"]


def test_summary_prints_known_variables_and_new_diagnostics():
    fit = fit_onsets(synthetic_cube(), FitConfig(num_bootstrap=50), rng=np.random.default_rng(0))
    # stand-ins for diagnostics another stage may add: a scalar and a per-n variable, unknown to summary.py
    fit["lack_of_fit_pvalue"] = xr.DataArray(0.4321, attrs={"long_name": "lack-of-fit p-value"})
    fit["local_slope"] = xr.DataArray([0.9, 1.1, np.nan], dims=(names.N,), coords={names.N: fit[names.N]})
    fit.attrs["power_law_ok"] = "yes"
    text = summarize(fit, title="synthetic")
    tau = fit[names.TAU_MEM]
    rows = table(text, "tau_mem (f_mem >= 0.1) per n and seed")
    assert [r["n"] for r in rows] == ["16", "32", "64"]
    assert set(rows[0]) == {"n", "seed 0", "seed 1", "mean", "censored"}
    assert row(rows, n="64")["seed 1"] == "censored"  # n = 64, seed 1 never memorizes
    assert row(rows, n="64")["seed 0"] == f"{float(tau.sel(n=64, seed=0)):.4g}"
    assert row(rows, n="32")["seed 1"] == f"{float(tau.sel(n=32, seed=1)):.4g}"
    assert row(rows, n="16")["mean"] == f"{float(np.exp(np.log(tau.sel(n=16)).mean())):.4g}"
    assert row(rows, n="64")["censored"] == "1/2" and row(rows, n="16")["censored"] == "0/2"

    quantity = {r["quantity"]: r["value"] for r in table(text, "fit tau_mem = A n^b, from 3 value(s) of n")}
    lo, hi = fit[names.TAU_MEM_EXPONENT_CI].values
    slo, shi = fit[f"{names.TAU_MEM}_{names.EXPONENT_CI_SEEDS}"].values
    assert quantity["b"] == f"{float(fit[names.TAU_MEM_EXPONENT]):.4g}"
    assert quantity["95 % CI of b, over n points and seeds"] == f"[{lo:.4g}, {hi:.4g}]"
    assert quantity["95 % CI of b, over seeds only"] == f"[{slo:.4g}, {shi:.4g}]"
    assert quantity["A"] == f"{float(fit[names.TAU_MEM_PREFACTOR]):.4g}"
    assert quantity["lack-of-fit p"] == f"{float(fit[names.TAU_MEM_LOF_PVALUE]):.4g}"
    assert quantity["rms log residual"] == f"{float(fit[f'{names.TAU_MEM}_{names.LOF_RMS}']):.4g}"
    assert quantity["power law"] == "not confirmed (1 censored runs)"

    slopes = table(text, "local slopes of log tau_mem")
    assert [r["n_lo -> n_hi"] for r in slopes] == ["16 -> 32", "32 -> 64"]
    s_lo, s_hi = fit[names.TAU_MEM_LOCAL_SLOPE_CI].values[0]
    assert slopes[0]["slope"] == f"{float(fit[names.TAU_MEM_LOCAL_SLOPE][0]):.4g}"
    assert slopes[0]["95 % CI"] == f"[{s_lo:.4g}, {s_hi:.4g}]"

    levels = table(text, "tau_mem by level")
    assert [r["level"] for r in levels] == ["0.01", "0.05", "0.1", "0.3", "0.5"]
    sel = {names.NORMALIZATION: "final", names.LEVEL: 0.3}
    b = float(fit[f"{names.TAU_MEM_LEVELS}_exponent"].sel(sel))
    lo, hi = fit[f"{names.TAU_MEM_LEVELS}_exponent_ci"].sel(sel).values
    p = float(fit[f"{names.TAU_MEM_LEVELS}_{names.LOF_PVALUE}"].sel(sel))
    assert row(levels, level="0.3")["final"] == f"{b:.4g} [{lo:.4g}, {hi:.4g}] p={p:.4g}"
    assert "raw" in levels[0]

    finals = table(text, "final f_mem")
    assert row(finals, n="64") == {"n": "64", "mean": "0.25", "s.e.": "0.25"}
    assert row(finals, n="16") == {"n": "16", "mean": "0.5", "s.e.": "0"}
    assert "n* (largest n whose final f_mem reaches 0.1): 64" in text
    assert "tau_gen: not in the fit" in text

    # the generic section: a scalar on its line, other small variables as tables
    assert "lack_of_fit_pvalue (lack-of-fit p-value): 0.4321" in text
    assert table(text, "local_slope:") == [{"n": "16", "value": "0.9"}, {"n": "32", "value": "1.1"},
                                           {"n": "64", "value": "n/a"}]
    prefactor = table(text, f"{names.TAU_MEM_LEVELS}_prefactor")
    want = float(fit[f"{names.TAU_MEM_LEVELS}_prefactor"].sel(sel))
    assert row(prefactor, normalization="final")["level 0.3"] == f"{want:.4g}"
    assert "attr power_law_ok: yes" in text
    assert not re.search(r"\[(\S+, ){4,}", text)  # no flat lists of numbers left


def test_summary_tables_tau_gen_and_its_tolerances():
    cube = synthetic_cube()
    n, steps = cube[names.N].values, cube[names.STEP].values
    # a quality metric that improves on a time scale ~ n (seed 1 a bit slower): tau_gen is finite everywhere
    energy = 1.0 / (1.0 + steps / (2.0 * n[:, None, None] * np.array([1.0, 1.3])[None, :, None]))
    cube[names.ENERGY] = ((names.N, names.SEED, names.STEP), energy)
    fit = fit_onsets(cube, FitConfig(num_bootstrap=20), rng=np.random.default_rng(0))
    text = summarize(fit)
    rows = table(text, f"tau_gen ({names.ENERGY}) per n and seed")
    assert row(rows, n="32")["seed 1"] == f"{float(fit[names.TAU_GEN].sel(n=32, seed=1)):.4g}"
    assert row(rows, n="64")["censored"] == "0/2"
    quantity = {r["quantity"]: r["value"] for r in table(text, "fit tau_gen = A n^b")}
    assert quantity["b"] == f"{float(fit[names.TAU_GEN_EXPONENT]):.4g}"
    tolerances = table(text, "tau_gen by tolerance")
    assert [r["tolerance"] for r in tolerances] == [f"{t:g}" for t in FitConfig().tau_gen_tolerances]
    sel = {names.TOLERANCE: 0.2}
    b = float(fit[f"{names.TAU_GEN_TOLERANCES}_exponent"].sel(sel))
    lo, hi = fit[f"{names.TAU_GEN_TOLERANCES}_exponent_ci"].sel(sel).values
    p = float(fit[f"{names.TAU_GEN_TOLERANCES}_{names.LOF_PVALUE}"].sel(sel))
    assert row(tolerances, tolerance="0.2")["b [CI] p"] == f"{b:.4g} [{lo:.4g}, {hi:.4g}] p={p:.4g}"


def test_summary_cli_reads_an_experiment_folder_and_fails_in_one_line(tmp_path, capsys):
    fit = fit_onsets(synthetic_cube(), FitConfig(num_bootstrap=20), rng=np.random.default_rng(0))
    exp = tmp_path / "exp"
    exp.mkdir()
    with pytest.raises(SystemExit):
        main([str(exp)])
    assert "fit.nc does not exist" in capsys.readouterr().err
    fit.to_netcdf(exp / "fit.nc", engine="h5netcdf")
    main([str(exp)])
    out = capsys.readouterr().out
    assert "n: 16, 32, 64; seeds: 0, 1" in out
    assert row(table(out, "tau_mem (f_mem >= 0.1) per n"), n="64")["seed 1"] == "censored"


def test_summary_of_a_sweep_has_one_block_per_value():
    fits = [fit_onsets(synthetic_cube(), FitConfig(num_bootstrap=20), rng=np.random.default_rng(0)) for _ in range(2)]
    fits[1][names.F_MEM_FINAL] = fits[1][names.F_MEM_FINAL] * 0 + 0.125
    fit = xr.concat(fits, dim=xr.DataArray([16, 32], dims=names.WIDTH, name=names.WIDTH))
    text = summarize(fit)
    assert "-- width = 16 --" in text and "-- width = 32 --" in text
    first, second = text.split("-- width = 32 --")
    assert row(table(first, "final f_mem"), n="16")["mean"] == "0.5"
    assert row(table(second, "final f_mem"), n="16") == {"n": "16", "mean": "0.125", "s.e.": "0"}
