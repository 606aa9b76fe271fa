"""The closed-form L2 terms of E_TG / E_OG against direct numerical integration in d = 1 and 2."""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import multivariate_normal

from diffmem.metrics.l2 import (
    halder_width,
    l2_kde_gaussian,
    log_gaussian_overlap,
    log_kde_gaussian_overlap,
    log_kde_overlap,
)


def _kde(points, eps):
    return lambda x: np.mean([multivariate_normal(p, eps**2 * np.eye(len(p))).pdf(x) for p in points], axis=0)


def _integrate_2d(f, lim=9.0):
    xs = np.linspace(-lim, lim, 721)
    grid = np.stack(np.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    h = xs[1] - xs[0]
    return float(f(grid).sum() * h * h)


def test_gaussian_gaussian_overlap_matches_quadrature_in_1d():
    m1, v1, m2, v2 = 0.3, 0.7, -1.1, 1.9
    direct, _ = integrate.quad(lambda x: multivariate_normal(m1, v1).pdf(x) * multivariate_normal(m2, v2).pdf(x),
                               -30, 30)
    assert math.exp(log_gaussian_overlap([m1], [[v1]], [m2], [[v2]])) == pytest.approx(direct, rel=1e-10)


def test_kde_terms_and_l2_match_a_grid_integral_in_2d():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2)) * [1.0, 0.6]
    y = rng.standard_normal((3, 2)) + 0.5
    ex, ey = 0.4, 0.7
    mean, cov = np.array([0.2, -0.3]), np.array([[1.2, 0.5], [0.5, 0.8]])
    rho_x, rho_y = _kde(x, ex), _kde(y, ey)
    rho_g = multivariate_normal(mean, cov).pdf
    assert math.exp(log_kde_overlap(x, x, eps_x=ex, eps_y=ex)) == pytest.approx(
        _integrate_2d(lambda g: rho_x(g) ** 2), rel=1e-6)
    assert math.exp(log_kde_overlap(x, y, eps_x=ex, eps_y=ey)) == pytest.approx(
        _integrate_2d(lambda g: rho_x(g) * rho_y(g)), rel=1e-6)
    assert math.exp(log_kde_gaussian_overlap(x, eps=ex, mean=mean, cov=cov)) == pytest.approx(
        _integrate_2d(lambda g: rho_x(g) * rho_g(g)), rel=1e-6)
    # the paper's E = int rho^2 - 2 int rho rho_G, in units of (4 pi sigma^2)^(-d/2)
    sigma = 1.3
    e = l2_kde_gaussian(x, eps=ex, mean=mean, cov=cov, sigma_ref=sigma)["e"]
    direct = _integrate_2d(lambda g: rho_x(g) ** 2 - 2 * rho_x(g) * rho_g(g))
    assert e == pytest.approx(direct * (4 * math.pi * sigma**2), rel=1e-6)
    # a full L2 distance adds int rho_G^2: it is non-negative and vanishes only for equal densities
    full = direct + _integrate_2d(lambda g: rho_g(g) ** 2)
    assert full > 0


def test_degenerate_generated_gaussian_is_fine_and_symmetry_trick_is_exact():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 3))
    cov = np.diag([1.0, 0.0, 0.0])  # rank 1: rho_G is a line, int rho_G^2 is infinite but E is finite
    out = l2_kde_gaussian(x, eps=0.5, mean=np.zeros(3), cov=cov)
    assert np.isfinite(out["e"]) and out["cross"] > 0
    assert out["e"] == pytest.approx(out["diag"] + out["off"] - 2 * out["cross"])
    # the self overlap visits half the pairs (x is y); a copy goes through the general path
    assert log_kde_overlap(x, x, eps_x=0.5, eps_y=0.5, chunk=64) == pytest.approx(
        log_kde_overlap(x, x.copy(), eps_x=0.5, eps_y=0.5, chunk=50), rel=1e-12)


def test_values_stay_finite_at_d_100_where_raw_terms_underflow_float32():
    rng = np.random.default_rng(2)
    d, n = 100, 50
    x = rng.standard_normal((n, d))
    out = l2_kde_gaussian(x, eps=halder_width(n, d), mean=np.zeros(d), cov=np.eye(d))
    # int rho_T^2 ~ (diagonal) 1 / n times (sigma / eps)^d = 1 in these units
    assert out["diag"] == pytest.approx(1.0, rel=1e-12) and out["off"] < 1e-6
    assert np.isfinite(out["e"])


def test_halder_width():
    assert halder_width(10_000, 100) == pytest.approx(10_000 ** (-0.01))
    with pytest.raises(ValueError, match=r"need N >= 1.*got 0, 3"):
        halder_width(0, 3)


def test_e_tg_e_og_l2_on_samples_tells_copies_from_fresh_draws():
    from diffmem.metrics.kde import e_tg_e_og

    rng = np.random.default_rng(4)
    d = 3
    train, pop = rng.standard_normal((20, d)), rng.standard_normal((3000, d))
    copies = train[rng.integers(0, 20, 400)] + 0.01 * rng.standard_normal((400, d))
    fresh = rng.standard_normal((400, d))
    mem = e_tg_e_og(train, copies, pop, divergence="l2", rng=rng)
    gen = e_tg_e_og(train, fresh, pop, divergence="l2", rng=rng)
    assert mem["delta"] < 0 < gen["delta"]
    with pytest.raises(ValueError, match="population samples"):
        from diffmem.metrics.exact import IsotropicGaussian

        e_tg_e_og(train, fresh, IsotropicGaussian(d), divergence="l2", rng=rng)


def test_importing_the_metrics_leaves_scipy_unimported():
    # scipy (~0.7 CPU-seconds to import) loads on the first L2 call, not with diffmem.metrics, which every
    # quality job imports whether or not it computes E_TG
    code = "import sys, diffmem.metrics; print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
