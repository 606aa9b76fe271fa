"""Fit diagnostics on tables with known answers: an exact power law, a curved law, pure noise."""

import itertools

import numpy as np
import pytest
from scipy import stats

from diffmem.scaling import diagnose, f_survival, lack_of_fit, local_slopes, t_quantile, weighted_slopes

N = np.array([16.0, 32, 64, 128, 256])


def table(log_tau_mean, *, seeds=4, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    return np.exp(np.asarray(log_tau_mean)[:, None] + noise * rng.normal(size=(len(log_tau_mean), seeds)))


def run(tau, n=N, seed=1):
    return diagnose(n, tau, num_bootstrap=2000, ci_level=0.95, alpha=0.05, rng=np.random.default_rng(seed))


def bitwise(a: float, b: float) -> bool:
    """The same float, NaN for NaN and the sign of a zero or an infinity included."""
    return (np.isnan(a) and np.isnan(b)) or (a == b and np.signbit(a) == np.signbit(b))


def test_t_quantile_and_f_survival_are_scipy_stats_bit_for_bit():
    """The two distributions taken from scipy.special give scipy.stats's answers, at the ends of the domain too."""
    qs = [0.0, 1e-300, 0.025, 0.5, 0.8, 0.95, 0.975, 1 - 1e-16, 1.0, -0.1, 1.1, np.nan]
    dofs = [1e-3, 0.5, 1.0, 2.0, 2.5, 7.3, 29.9, 1e6, np.inf, 0.0, -1.0, np.nan]
    wrong = [(q, d) for q, d in itertools.product(qs, dofs) if not bitwise(t_quantile(q, d), float(stats.t.ppf(q, d)))]
    assert not wrong
    fs = [-1.0, -1e-300, 0.0, 1e-300, 0.3, 1.0, 2.2, 17.0, 1e300, np.inf, np.nan]
    dfs = [1.0, 2.0, 3.0, 33.0, 1e4, np.inf, 0.5, 0.0, -1.0, np.nan]
    wrong = [(f, m, n) for f, m, n in itertools.product(fs, dfs, dfs)
             if not bitwise(f_survival(f, m, n), float(stats.f.sf(f, m, n)))]
    assert not wrong
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959966, abs=1e-6)  # the normal's quantile in the limit
    assert f_survival(1.0, 1.0, 1.0) == pytest.approx(0.5)  # F(1, 1) is symmetric about 1 in log


def test_weighted_slopes_match_polyfit_and_handle_degenerate_draws():
    x = np.log(N)
    y = np.log(table(1.3 * x))
    w = np.ones((1, *y.shape))
    assert weighted_slopes(x, y, w)[0] == pytest.approx(np.polyfit(np.repeat(x, 4), y.ravel(), 1)[0])
    only_one_n = np.zeros((1, *y.shape))
    only_one_n[0, 2] = 1
    assert np.isnan(weighted_slopes(x, y, only_one_n)[0])


def test_exact_power_law():
    tau = 3.0 * N[:, None] ** 1.0 * np.ones((1, 3))  # no seed scatter at all
    out = run(tau)
    assert out["exponent"] == pytest.approx(1.0)
    assert out["prefactor"] == pytest.approx(3.0)
    assert out["local_slope"] == pytest.approx(np.ones(4))
    assert out["exponent_ci"] == pytest.approx([1.0, 1.0])
    assert out["lof_p_value"] == 1.0 and out["power_law_ok"]


def test_power_law_with_seed_noise_passes_and_ci_covers_the_exponent():
    # over repeated draws of a true power law with seed noise: the flag is on ~95 % of the time and
    # the n-and-seeds CI covers the true exponent at least as often as its level says
    ok, covered, widths = [], [], []
    for s in range(100):
        out = diagnose(N, table(np.log(3.0) + 1.0 * np.log(N), noise=0.1, seed=s), num_bootstrap=500,
                       ci_level=0.95, alpha=0.05, rng=np.random.default_rng(s))
        lo, hi = out["exponent_ci"]
        ok.append(out["power_law_ok"])
        covered.append(lo < 1.0 < hi)
        widths.append(hi - lo)
    assert 0.88 <= np.mean(ok) <= 0.99
    assert np.mean(covered) >= 0.9
    assert np.median(widths) < 0.3


def test_lack_of_fit_test_is_calibrated_under_the_null():
    # a true power law with seed noise: the test rejects at 5 % about 5 % of the time
    p = np.array([lack_of_fit(N, table(0.8 * np.log(N), noise=0.2, seed=s))["p_value"] for s in range(400)])
    assert 0.02 < np.mean(p < 0.05) < 0.09


def test_curved_law_is_flagged_and_its_ci_widens():
    # the default digits run's shape: local slopes ~0.2, then ~1.1, then ~1.6 (curved in log-log)
    x = np.log(N / N[0])
    tau = table(np.log(1000) + 0.2 * x + 0.35 * x**2, noise=0.03)
    out = run(tau)
    assert out["lof_p_value"] < 1e-6 and not out["power_law_ok"]
    slopes = out["local_slope"]
    assert np.all(np.diff(slopes) > 0)  # the local slopes grow along n
    seeds_lo, seeds_hi = out["exponent_ci_seeds"]
    lo, hi = out["exponent_ci"]
    assert seeds_hi - seeds_lo < 0.05  # seeds alone: tight around the misfit
    assert hi - lo > 10 * (seeds_hi - seeds_lo)  # resampling the n points exposes it
    assert lo < slopes[1] and hi > slopes[-2]


def test_pure_noise_gives_no_dependence_on_n():
    tau = table(np.full(N.size, np.log(500.0)), noise=0.5, seed=3)
    out = run(tau)
    lo, hi = out["exponent_ci"]
    assert lo < 0 < hi
    assert abs(out["exponent"]) < 0.3
    assert out["lof_p_value"] > 0.05  # a flat power law (b ~ 0) describes noise
    ci = out["local_slope_ci"]
    assert np.all((ci[:, 0] < 0) & (ci[:, 1] > 0))


def test_censored_runs_and_single_seed_turn_the_flag_off():
    tau = table(np.log(N), noise=0.05)
    tau[-1, 0] = np.nan
    out = run(tau)
    assert out["num_censored"] == 1 and not out["power_law_ok"]
    one_seed = run(table(np.log(N), seeds=1))
    assert np.isnan(one_seed["lof_p_value"]) and not one_seed["power_law_ok"]
    assert np.all(np.isnan(one_seed["local_slope_ci"]))
    slope, _ = local_slopes(N, one_seed_tau := table(np.log(N), seeds=1), ci_level=0.95)
    assert slope == pytest.approx(np.diff(np.log(one_seed_tau[:, 0])) / np.diff(np.log(N)))


def width_fit(width_power, *, seed=0):
    """A width sweep's fit.nc with tau_mem = 2000 n / W^width_power (seed noise 5 %)."""
    import xarray as xr

    from diffmem import names

    rng = np.random.default_rng(seed)
    widths = np.array([32, 64, 128])
    tau = 2000.0 * N[:, None, None] / widths[None, :, None] ** width_power * np.exp(0.05 * rng.normal(size=(N.size, 3, 3)))
    return xr.Dataset({names.TAU_MEM: ((names.N, names.WIDTH, names.SEED), tau)},
                      coords={names.N: N, names.WIDTH: widths, names.SEED: [0, 1, 2]},
                      attrs={"num_bootstrap": 1000, "ci_level": 0.95, "lack_of_fit_alpha": 0.05})  # as fit.nc has


def test_width_collapse_recovers_n_over_w_and_rejects_a_wrong_width_law():
    from diffmem import names
    from diffmem.names import TAU_MEM_TIMES_WIDTH as COLLAPSE
    from diffmem.stages.sweep import width_collapse

    good = [width_collapse(width_fit(1.0, seed=s), num_bootstrap=200) for s in range(20)]
    assert np.median([float(g[f"{COLLAPSE}_exponent"]) for g in good]) == pytest.approx(1.0, abs=0.03)
    assert np.median([float(g[f"{COLLAPSE}_prefactor"]) for g in good]) == pytest.approx(2000, rel=0.1)
    assert np.mean([bool(g[f"{COLLAPSE}_{names.POWER_LAW_OK}"]) for g in good]) >= 0.75  # two 5 % tests: ~90 %
    # tau_mem ~ n / sqrt(W): tau_mem * W does not collapse, and the joint test says so every time
    bad = [width_collapse(width_fit(0.5, seed=s), num_bootstrap=200) for s in range(5)]
    assert all(float(b[f"{COLLAPSE}_collapse_pvalue"]) < 1e-6 for b in bad)
    assert np.mean([float(g[f"{COLLAPSE}_collapse_pvalue"]) < 0.05 for g in good]) <= 0.2
    assert not any(bool(b[f"{COLLAPSE}_{names.POWER_LAW_OK}"]) for b in bad)


def test_the_same_table_gets_the_same_cis_whatever_was_fitted_before():
    """The bootstrap is keyed by the generator's seed and the table, not by the generator's running state:
    the headline tau_gen and the same readout in the levels group must print one CI, not two."""
    rng_fresh, rng_used = np.random.default_rng(0), np.random.default_rng(0)
    n = np.array([16.0, 32, 64, 128])
    tau = 100 * n[:, None] ** 0.5 * np.exp(np.random.default_rng(1).normal(0, 0.3, (4, 3)))
    diagnose(n, tau * 1.7, num_bootstrap=200, ci_level=0.95, alpha=0.05, rng=rng_used)  # another table first
    first = diagnose(n, tau, num_bootstrap=200, ci_level=0.95, alpha=0.05, rng=rng_fresh)
    after = diagnose(n, tau, num_bootstrap=200, ci_level=0.95, alpha=0.05, rng=rng_used)
    np.testing.assert_array_equal(first["exponent_ci"], after["exponent_ci"])
    np.testing.assert_array_equal(first["exponent_ci_seeds"], after["exponent_ci_seeds"])
    # another seed or another table still draws other resamples
    other_seed = diagnose(n, tau, num_bootstrap=200, ci_level=0.95, alpha=0.05, rng=np.random.default_rng(5))
    other_table = diagnose(n, tau * np.exp(np.random.default_rng(2).normal(0, 0.01, tau.shape)),
                           num_bootstrap=200, ci_level=0.95, alpha=0.05, rng=np.random.default_rng(0))
    assert not np.array_equal(first["exponent_ci"], other_seed["exponent_ci"])
    assert not np.array_equal(first["exponent_ci"], other_table["exponent_ci"])
