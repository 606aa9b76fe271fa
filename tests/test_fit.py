import numpy as np
import pytest
import xarray as xr

from diffmem import names
from diffmem.config import FitConfig
from diffmem.onsets import common_quality_targets, fit_onsets, onset_step, quality_level_onsets, quality_onset
from diffmem.scaling import power_law_fit


def test_onset_interpolates_in_log_step():
    steps = np.array([0, 10, 100, 1000])
    assert onset_step(steps, [0, 0, 0.2, 0.6], threshold=0.1) == pytest.approx(np.sqrt(10 * 100))
    assert np.isnan(onset_step(steps, [0, 0, 0.05, 0.08], threshold=0.1))
    assert onset_step(steps, [0, 0.1, 0.2, 0.3], threshold=0.1) == pytest.approx(10)


def synthetic_cube(exponent, *, seeds=4, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    n = np.array([32, 64, 128, 256, 512])
    steps = np.unique(np.round(np.logspace(0, 6, 49)).astype(int))
    tau = 3.0 * n[:, None] ** exponent * np.exp(noise * rng.normal(size=(n.size, seeds)))  # [N, S]
    # logistic rise in log-step around tau
    f = 1 / (1 + np.exp(-4 * (np.log(steps)[None, None, :] - np.log(tau)[:, :, None])))
    cube = xr.Dataset({names.F_MEM: ((names.N, names.SEED, names.STEP), f)},
                      coords={names.N: n, names.SEED: np.arange(seeds), names.STEP: steps})
    return cube


@pytest.mark.parametrize("exponent", [0.5, 1.0, 1.5])
def test_fit_recovers_a_known_exponent(exponent):
    fit = fit_onsets(synthetic_cube(exponent), FitConfig(tau_mem_threshold=0.5, num_bootstrap=200),
                     rng=np.random.default_rng(1))
    b = float(fit[names.TAU_MEM_EXPONENT])
    lo, hi = fit[names.TAU_MEM_EXPONENT_CI].values
    assert b == pytest.approx(exponent, abs=0.05)
    assert lo <= b <= hi and hi - lo < 0.2
    assert not bool(fit[names.TAU_MEM_CENSORED].any())


def test_censored_runs_are_flagged_and_excluded():
    cube = synthetic_cube(1.0)
    cube[names.F_MEM].loc[{names.N: 512, names.SEED: 0}] = 0.0
    fit = fit_onsets(cube, FitConfig(tau_mem_threshold=0.5, num_bootstrap=50), rng=np.random.default_rng(1))
    assert bool(fit[names.TAU_MEM_CENSORED].sel(n=512, seed=0))
    assert np.isnan(float(fit[names.TAU_MEM].sel(n=512, seed=0)))
    assert fit.attrs["num_censored"] == 1
    assert float(fit[names.TAU_MEM_EXPONENT]) == pytest.approx(1.0, abs=0.05)


def test_power_law_fit_exact():
    n = np.array([10, 100, 1000.0])
    a, b = power_law_fit(n, 2 * n**1.3)
    assert a == pytest.approx(2) and b == pytest.approx(1.3)


def test_quality_onset_relative_and_absolute():
    steps = np.array([0, 10, 100, 1000, 10000])
    fd = np.array([100.0, 50.0, 10.0, 5.0, 6.0])  # best 5; target 5 + 0.1 * 95 = 14.5, crossed in (10, 100)
    tau = quality_onset(steps, fd, tolerance=0.1)
    assert tau == pytest.approx(10 ** (1 + (50 - 14.5) / 40))
    assert quality_onset(steps, fd, tolerance=0.1, threshold=50.0) == pytest.approx(10)
    assert np.isnan(quality_onset(steps, np.full(5, 3.0), tolerance=0.1))  # never improves
    loglik = -fd
    assert quality_onset(steps, loglik, tolerance=0.1, lower_is_better=False) == pytest.approx(tau)


def test_tau_gen_independent_of_n_gives_zero_exponent():
    cube = synthetic_cube(1.0)
    steps = cube[names.STEP].values
    # quality improves on one clock for every n: FD = 1 + 100 / (1 + step / 300)
    fd = 1 + 100 / (1 + steps / 300.0)
    cube["fd_data"] = ((names.N, names.SEED, names.STEP), np.broadcast_to(fd, cube[names.F_MEM].shape).copy())
    fit = fit_onsets(cube, FitConfig(tau_mem_threshold=0.5, num_bootstrap=50), rng=np.random.default_rng(0))
    assert fit.attrs["tau_gen_metric"] == "fd_data"
    assert float(fit[names.TAU_GEN_EXPONENT]) == pytest.approx(0.0, abs=1e-6)
    assert float(fit[names.TAU_MEM_EXPONENT]) == pytest.approx(1.0, abs=0.05)


def floored_quality_cube():
    """Every run improves on one clock, FD = 1 + 100 / (1 + step / 300), until it stops at a floor that is
    higher for smaller n (a run that memorizes stops improving against held-out data): 40 * 32 / n."""
    cube = synthetic_cube(1.0)
    steps = cube[names.STEP].values
    clock = 1 + 100 / (1 + steps / 300.0)
    floor = 40.0 * 32 / cube[names.N].values
    fd = np.maximum(clock[None, None, :], floor[:, None, None]) * np.ones(cube[names.F_MEM].shape)
    cube["fd_data"] = ((names.N, names.SEED, names.STEP), fd)
    return cube, steps, clock


def test_common_quality_targets_are_shared_by_every_run():
    cube, steps, clock = floored_quality_cube()
    fd = cube["fd_data"].values
    first, best = clock[0], 2.5  # the value at the first checkpoint; the lowest floor (n = 512)
    targets = common_quality_targets(fd, [0.5, 0.2])
    assert targets == pytest.approx([best + 0.5 * (first - best), best + 0.2 * (first - best)])
    # higher-is-better metrics mirror it
    assert common_quality_targets(-fd, [0.5, 0.2], lower_is_better=False) == pytest.approx(-targets)
    assert np.isnan(common_quality_targets(np.full((2, 3, 5), 7.0), [0.5])).all()  # never improves

    tau = quality_level_onsets(cube["fd_data"], [0.5, 0.2])
    # q = 0.5: the target (51.75) lies above every floor, so every run reaches it on the common clock
    expected = np.interp(np.log(targets[0]), np.log(clock[::-1]), np.log(np.maximum(steps, 1)[::-1]))
    at_half = tau.sel({names.QUALITY_LEVEL: 0.5}).values
    assert np.allclose(at_half, at_half.flat[0]) and at_half.flat[0] == pytest.approx(np.exp(expected), rel=0.05)
    # q = 0.2: the target (22.1) lies below the floor of n = 32 (40), above that of n = 64 (20)
    at_fifth = tau.sel({names.QUALITY_LEVEL: 0.2})
    assert bool(at_fifth.sel({names.N: 32}).isnull().all()) and bool(at_fifth.sel({names.N: 64}).notnull().all())
    assert tau[names.QUALITY_TARGET].values == pytest.approx(targets)
    # a run that starts past a target (its untrained value better than the median's) reads step 1, not 0
    better = cube["fd_data"].copy()
    better[0, 0, :] = np.minimum(better[0, 0, :].values, 0.5 * clock[0])
    early = quality_level_onsets(better.assign_coords({names.STEP: np.r_[0, steps[1:]]}), [0.9])
    assert early.isel({names.N: 0, names.SEED: 0}).values.tolist() == [1.0]


def test_tau_gen_read_at_a_common_level_is_independent_of_n_where_the_tolerance_readout_is_not():
    cube, _, clock = floored_quality_cube()
    by_tolerance = fit_onsets(cube, FitConfig(tau_mem_threshold=0.5, num_bootstrap=50), rng=np.random.default_rng(0))
    # each run's own best is its floor, lower for larger n, so the tolerance readout grows with n
    assert by_tolerance.attrs["tau_gen_readout"] == "tolerance"
    assert float(by_tolerance[names.TAU_GEN_EXPONENT]) > 0.5
    by_level = fit_onsets(cube, FitConfig(tau_mem_threshold=0.5, num_bootstrap=50, tau_gen_level=0.5),
                          rng=np.random.default_rng(0))
    assert by_level.attrs["tau_gen_readout"] == "common level"
    assert by_level.attrs["tau_gen_target"] == pytest.approx(2.5 + 0.5 * (clock[0] - 2.5))
    assert float(by_level[names.TAU_GEN_EXPONENT]) == pytest.approx(0.0, abs=1e-6)
    levels = by_level[f"{names.TAU_GEN_LEVELS}_exponent"]
    assert float(levels.sel({names.QUALITY_LEVEL: 0.5})) == pytest.approx(0.0, abs=1e-6)
    assert bool(by_level[f"{names.TAU_GEN_LEVELS}_censored"].sel({names.QUALITY_LEVEL: 0.1}).any())
    # an absolute threshold wins over the level
    by_threshold = fit_onsets(cube, FitConfig(tau_mem_threshold=0.5, num_bootstrap=50, tau_gen_level=0.5,
                                              tau_gen_threshold=60.0), rng=np.random.default_rng(0))
    assert by_threshold.attrs["tau_gen_readout"] == "threshold"
    assert float(by_threshold[names.TAU_GEN].isel(n=0, seed=0)) < float(by_level[names.TAU_GEN].isel(n=0, seed=0))


def test_half_crossing_interpolates_in_log_n():
    from diffmem.onsets import half_crossing

    n = np.array([2, 4, 8, 16])
    assert half_crossing(n, np.array([0.0, 0.25, 0.75, 1.0])) == pytest.approx(np.sqrt(32))
    assert half_crossing(n, np.array([0.6, 0.8, 1.0, 1.0])) == 2
    assert np.isnan(half_crossing(n, np.array([0.0, 0.1, 0.2, 0.4])))
    assert half_crossing(n, np.array([np.nan, 0.0, 0.5, 1.0])) == pytest.approx(8)


def test_final_memorization_and_n_star():
    from diffmem.onsets import final_memorization

    f = np.array([[[0.0, 0.8], [0.0, 0.6]], [[0.0, 0.2], [0.0, np.nan]], [[0.0, 0.0], [0.0, 0.05]]])  # (n, seed, step)
    cube = xr.Dataset({names.F_MEM: ((names.N, names.SEED, names.STEP), f)},
                      coords={names.N: [8, 16, 32], names.SEED: [0, 1], names.STEP: [0, 10]})
    out = final_memorization(cube, threshold=0.1)
    # the run stopped early (NaN at the last step) counts with its last valid value, 0.0
    assert out[names.F_MEM_FINAL].values == pytest.approx([0.7, 0.1, 0.025])
    assert float(out[names.N_STAR]) == 16
    assert np.isnan(float(final_memorization(cube, threshold=0.9)[names.N_STAR]))


def plateau_cube(exponent=1.0, *, finals=(1.0, 0.9, 0.6, 0.3, 0.15), seeds=3, noise=0.03):
    """f_mem rising logistically in log-step around tau = 3 n^b to a final value that falls with n."""
    cube = synthetic_cube(exponent, seeds=seeds, noise=noise)
    final = xr.DataArray(np.asarray(finals), dims=(names.N,), coords={names.N: cube[names.N]})
    cube[names.F_MEM] = cube[names.F_MEM] * final
    return cube


def test_levels_raw_and_normalized():
    cube = plateau_cube()
    cfg = FitConfig(tau_mem_threshold=0.1, tau_mem_levels=(0.1, 0.5), num_bootstrap=200)
    fit = fit_onsets(cube, cfg, rng=np.random.default_rng(0))
    tau = fit[names.TAU_MEM_LEVELS]
    assert tau.dims == (names.NORMALIZATION, names.LEVEL, names.N, names.SEED)
    # normalized by the final value, the level-0.5 onset is the logistic midpoint 3 n^1 for every n ...
    exponent = fit[f"{names.TAU_MEM_LEVELS}_exponent"]
    assert float(exponent.sel(normalization="final", level=0.5)) == pytest.approx(1.0, abs=0.05)
    assert bool(fit[f"{names.TAU_MEM_LEVELS}_power_law_ok"].sel(normalization="final", level=0.5))
    # ... while raw f_mem never reaches 0.5 for the n whose final value is below it (censored: flag off)
    raw = tau.sel(normalization="raw", level=0.5)
    assert bool(raw.sel(n=[256, 512]).isnull().all()) and bool(raw.sel(n=[32, 64, 128]).notnull().all())
    assert not bool(fit[f"{names.TAU_MEM_LEVELS}_power_law_ok"].sel(normalization="raw", level=0.5))
    # raw level 0.1 of a falling plateau reads late for large n: steeper than 1, and the test sees the bend
    assert float(exponent.sel(normalization="raw", level=0.1)) > 1.1
    assert not bool(fit[f"{names.TAU_MEM_LEVELS}_power_law_ok"].sel(normalization="raw", level=0.1))
    assert fit[names.TAU_MEM_LOCAL_SLOPE].dims == (names.SEGMENT,)
    assert list(fit[names.N_LO].values) == [32, 64, 128, 256]


def test_diagnostics_survive_netcdf(tmp_path):
    from diffmem.io import atomic_to_netcdf

    cube = plateau_cube()
    steps = cube[names.STEP].values
    cube["fd_data"] = ((names.N, names.SEED, names.STEP),
                       np.broadcast_to(1 + 100 / (1 + steps / 300.0), cube[names.F_MEM].shape).copy())
    fit = fit_onsets(cube, FitConfig(num_bootstrap=50), rng=np.random.default_rng(0))
    assert fit[f"{names.TAU_GEN_TOLERANCES}_exponent"].dims == (names.TOLERANCE,)
    assert bool(fit[names.TAU_GEN_POWER_LAW_OK]) is True  # the same clock for every n: b = 0 exactly
    path = tmp_path / "fit.nc"
    atomic_to_netcdf(fit, path)
    back = xr.open_dataset(path, engine="h5netcdf").load()
    xr.testing.assert_identical(back[names.TAU_MEM_POWER_LAW_OK], fit[names.TAU_MEM_POWER_LAW_OK])
    xr.testing.assert_allclose(back[f"{names.TAU_MEM_LEVELS}_local_slope_ci"], fit[f"{names.TAU_MEM_LEVELS}_local_slope_ci"])
    assert "lack-of-fit" in back.attrs["power_law_criterion"]


def test_fit_config_defaults_match_the_schema():
    import dataclasses

    from diffmem.config import SampleConfig, load_schema

    schema = load_schema()["$defs"]
    for cls, section in ((FitConfig, "fit"), (SampleConfig, "sample")):
        props = schema[section]["properties"]
        for field in dataclasses.fields(cls):
            default = props[field.name].get("default")
            value = list(field.default) if isinstance(field.default, tuple) else field.default
            assert value == default, (section, field.name)
