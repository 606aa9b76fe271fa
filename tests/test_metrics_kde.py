"""Kernel density estimates, Hellinger / KL by Monte Carlo, and E_TG / E_OG."""

import math

import numpy as np
import pytest
from scipy import stats

from diffmem.metrics import exact, kde

# ---- bandwidths and KDE log densities ----------------------------------------------------------

def test_bandwidth_rules(rng):
    pts = rng.normal(size=(1000, 4)) * np.array([1.0, 2.0, 3.0, 4.0])
    sigma = pts.std(0, ddof=1).mean()
    assert sigma == pytest.approx(2.5, rel=0.05)
    assert kde.bandwidth(pts, rule="halder") == pytest.approx(sigma * 1000 ** (-1 / 4))
    assert kde.bandwidth(pts, rule="scott") == pytest.approx(sigma * 1000 ** (-1 / 8))
    assert kde.bandwidth(pts, rule="silverman") == pytest.approx(sigma * (4 / (1000 * 6)) ** (1 / 8))
    assert kde.bandwidth(pts, rule=0.7) == 0.7
    with pytest.raises(ValueError, match="unknown bandwidth rule"):
        kde.bandwidth(pts, rule="nearest")
    with pytest.raises(ValueError, match="a fixed bandwidth must be positive; got 0.0"):
        kde.bandwidth(pts, rule=0.0)


def test_kde_logpdf_matches_brute_force_across_chunks(rng):
    centers, x = rng.normal(size=(23, 3)), rng.normal(size=(11, 3))
    h = 0.4
    brute = np.log(np.mean([stats.multivariate_normal(c, h**2 * np.eye(3)).pdf(x) for c in centers], axis=0))
    got = kde.kde_logpdf(x, centers, bandwidth=h, chunk=4, center_chunk=5)
    assert got.shape == (11,) and np.allclose(got, brute, rtol=1e-12, atol=1e-12)
    assert np.allclose(got, kde.kde_logpdf(x, centers, bandwidth=h), rtol=1e-12)


def test_kde_logpdf_stays_finite_far_from_every_center():
    # exp(-|x - c|^2 / 2h^2) underflows to 0 here; the log-sum-exp still gives the exact value
    center, x, h = np.zeros((1, 2)), np.array([[30.0, 40.0]]), 0.1
    expected = -(50.0**2) / (2 * h**2) - math.log(2 * math.pi * h**2)
    assert kde.kde_logpdf(x, center, bandwidth=h)[0] == pytest.approx(expected, rel=1e-12)


def test_kde_samples_have_the_kde_moments(rng):
    centers = rng.normal(size=(50, 2)) * 3
    p = kde.KDE(centers, 0.5)
    draws = p.sample(40000, rng)
    assert np.allclose(draws.mean(0), centers.mean(0), atol=0.05)
    expected_cov = np.cov(centers, rowvar=False, ddof=0) + 0.25 * np.eye(2)
    assert np.allclose(np.cov(draws, rowvar=False), expected_cov, atol=0.1)


# ---- Hellinger and KL --------------------------------------------------------------------------

def test_hellinger_of_identical_kdes_is_zero_and_far_apart_is_one(rng):
    x = rng.normal(size=(300, 3))
    p = kde.KDE.fit(x, rule="scott")
    h, se = kde.hellinger_sq(p, p, num_mc=2000, rng=rng)
    assert abs(h) < 1e-12 and se < 1e-12
    far = kde.KDE.fit(x + 100.0, rule="scott")
    h, se = kde.hellinger_sq(p, far, num_mc=2000, rng=rng)
    assert h == pytest.approx(1.0, abs=1e-9) and se < 1e-9


@pytest.mark.parametrize("s1, s2, shift, dim", [(1.0, 1.0, 1.0, 2), (1.0, 2.0, 0.0, 3), (0.5, 1.5, 0.7, 1)])
def test_hellinger_between_gaussians_matches_closed_form(rng, s1, s2, shift, dim):
    # H^2 = 1 - BC; per coordinate BC = sqrt(2 s1 s2 / (s1^2 + s2^2)) exp(-shift^2 / (4 (s1^2 + s2^2)))
    bc_1d = math.sqrt(2 * s1 * s2 / (s1**2 + s2**2)) * math.exp(-(shift**2) / (4 * (s1**2 + s2**2)))
    p = exact.IsotropicGaussian(dim=dim, std=s1)
    q = exact.IsotropicGaussian(dim=dim, mean=shift, std=s2)
    h, se = kde.hellinger_sq(p, q, num_mc=20000, rng=rng)
    assert 0 < se < 0.01
    assert h == pytest.approx(1 - bc_1d**dim, abs=4 * se)


def test_hellinger_standard_error_is_honest():
    # the spread of repeated estimates should match the standard error each run reports
    p, q = exact.IsotropicGaussian(dim=2), exact.IsotropicGaussian(dim=2, mean=1.0, std=1.3)
    runs = [kde.hellinger_sq(p, q, num_mc=400, rng=np.random.default_rng(seed)) for seed in range(200)]
    estimates, ses = np.array([r[0] for r in runs]), np.array([r[1] for r in runs])
    assert 0.75 < estimates.std(ddof=1) / ses.mean() < 1.3


def test_kl_between_gaussians_matches_closed_form(rng):
    # KL(N(0, s1^2 I) || N(m, s2^2 I)) = d [log(s2/s1) + (s1^2 + m^2) / (2 s2^2) - 1/2]
    p, q = exact.IsotropicGaussian(dim=3, std=1.0), exact.IsotropicGaussian(dim=3, mean=0.5, std=1.5)
    expected = 3 * (math.log(1.5) + (1 + 0.25) / (2 * 2.25) - 0.5)
    kl, se = kde.kl_divergence(p, q, num_mc=20000, rng=rng)
    assert kl == pytest.approx(expected, abs=4 * se) and se < 0.02
    same, same_se = kde.kl_divergence(p, p, num_mc=100, rng=rng)
    assert same == 0.0 and same_se == 0.0


def test_kde_and_exact_densities_mix_on_either_side(rng):
    # a two-center KDE with h = 1 at +-mu 1 is exactly the symmetric mixture
    gmm = exact.SymmetricGMM(dim=3, mu=1.2)
    as_kde = kde.KDE(np.stack([np.full(3, 1.2), np.full(3, -1.2)]), 1.0)
    for p, q in ((gmm, as_kde), (as_kde, gmm)):
        h, _ = kde.hellinger_sq(p, q, num_mc=1000, rng=rng)
        kl, _ = kde.kl_divergence(p, q, num_mc=1000, rng=rng)
        assert abs(h) < 1e-12 and abs(kl) < 1e-9


def test_callable_density_gives_the_same_numbers_as_the_object_it_wraps():
    truth = exact.IsotropicGaussian(dim=2, mean=0.3)
    scipy_logpdf = stats.multivariate_normal(np.full(2, 0.3), np.eye(2)).logpdf
    wrapped = kde.CallableDensity(lambda x: scipy_logpdf(x), truth.sample)
    other = kde.KDE(np.zeros((3, 2)), 0.8)
    a = kde.hellinger_sq(truth, other, num_mc=1000, rng=np.random.default_rng(5))
    b = kde.hellinger_sq(wrapped, other, num_mc=1000, rng=np.random.default_rng(5))
    assert a == pytest.approx(b, rel=1e-10)
    with pytest.raises(TypeError, match="logpdf"):
        kde.hellinger_sq(np.zeros((3, 2)), other, num_mc=10, rng=np.random.default_rng(0))


# ---- E_TG / E_OG -------------------------------------------------------------------------------

def test_e_tg_e_og_separate_memorizing_from_generalizing_samples(rng):
    truth = exact.SymmetricGMM(dim=3, mu=1.0)
    train = truth.sample(20, rng)
    copies = train[rng.integers(0, 20, size=400)] + 1e-3 * rng.normal(size=(400, 3))
    fresh = truth.sample(400, rng)
    population = truth.sample(4000, rng)
    for target in (population, truth):  # a population KDE, or the exact density
        mem = kde.e_tg_e_og(train, copies, target, num_mc=2000, rng=rng)
        gen = kde.e_tg_e_og(train, fresh, target, num_mc=2000, rng=rng)
        assert mem["e_tg"] < 0.02 and mem["delta"] < -10 * mem["delta_se"]  # rho_G is rho_T
        assert gen["e_og"] < 0.05 and gen["delta"] > 10 * gen["delta_se"]  # rho_G is rho_O
        for res in (mem, gen):
            assert 0 <= res["e_tg"] <= 1 and 0 <= res["e_og"] <= 1
            assert res["delta"] == res["e_tg"] - res["e_og"]
            assert res["delta_se"] == pytest.approx(math.hypot(res["e_tg_se"], res["e_og_se"]))
            # one width, set by the training set, for all three densities
            assert res["bandwidth_train"] == res["bandwidth_generated"] == res["bandwidth_population"]
            assert res["bandwidth_train"] == pytest.approx(kde.bandwidth(train, rule="halder"))


def test_e_tg_e_og_with_per_set_bandwidths_and_an_unsmoothed_exact_density(rng):
    truth = exact.IsotropicGaussian(dim=2)
    train, fresh = truth.sample(20, rng), truth.sample(400, rng)
    res = kde.e_tg_e_og(train, fresh, truth, bandwidth_from="each", smooth_exact=False, num_mc=2000, rng=rng)
    assert res["bandwidth_generated"] == pytest.approx(kde.bandwidth(fresh, rule="halder"))
    assert res["bandwidth_generated"] < res["bandwidth_train"] and math.isnan(res["bandwidth_population"])
    assert res["delta"] > 5 * res["delta_se"]
    with pytest.raises(ValueError, match="bandwidth_from"):
        kde.e_tg_e_og(train, fresh, truth, bandwidth_from="population", rng=rng)


def test_e_tg_e_og_with_kl_and_a_fixed_bandwidth(rng):
    truth = exact.IsotropicGaussian(dim=2)
    train = truth.sample(15, rng)
    copies = train[rng.integers(0, 15, size=300)]
    res = kde.e_tg_e_og(train, copies, truth.sample(3000, rng), bandwidth_rule=0.2, divergence="kl",
                        num_mc=2000, rng=rng)
    # the same centers up to resampling and the same width: rho_G is close to rho_T, far from rho_O
    assert res["e_tg"] < 0.5 < res["e_og"]
    assert res["bandwidth_train"] == res["bandwidth_generated"] == res["bandwidth_population"] == 0.2
    with pytest.raises(ValueError, match="divergence"):
        kde.e_tg_e_og(train, copies, truth, divergence="tv", rng=rng)
