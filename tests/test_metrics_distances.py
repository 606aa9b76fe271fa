"""Set distances (FD, KID, energy, SW2) against closed forms and brute-force evaluations."""

import math

import numpy as np
import pytest
from scipy import linalg, stats

from diffmem.metrics import distances


def _random_spd(rng, dim, *, scale=1.0):
    a = rng.normal(size=(dim, dim))
    return scale * (a @ a.T / dim + 0.1 * np.eye(dim))


# ---- Fréchet distance ----------------------------------------------------------------------------

def test_fd_of_a_set_with_itself_is_zero(rng):
    a = rng.normal(size=(500, 6))
    assert distances.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_fd_of_a_shifted_copy_is_the_squared_shift(rng):
    # identical covariances: every covariance term cancels and FD = ||shift||^2 exactly
    a = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    shift = np.array([0.3, -1.0, 0.0, 2.0, 0.5])
    values = [distances.frechet_distance(a, a + t * shift) for t in (0.5, 1.0, 2.0)]
    assert values == pytest.approx([t**2 * shift @ shift for t in (0.5, 1.0, 2.0)], rel=1e-8)
    assert values[0] < values[1] < values[2]


def test_gaussian_frechet_diagonal_closed_form(rng):
    # commuting covariances: tr(C1 + C2 - 2 (C1 C2)^1/2) = sum_i (sqrt(a_i) - sqrt(b_i))^2
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    a, b = rng.uniform(0.2, 3, size=4), rng.uniform(0.2, 3, size=4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = distances.gaussian_frechet(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)
    # N(0, I) vs N(0, 4 I) in 3 dims: 3 * (1 - 2)^2
    assert distances.gaussian_frechet(np.zeros(3), np.eye(3), np.zeros(3), 4 * np.eye(3)) == pytest.approx(3.0)


def test_gaussian_frechet_matches_sqrtm_for_non_commuting_covariances(rng):
    c1, c2 = _random_spd(rng, 6), _random_spd(rng, 6, scale=2.0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2) - 2 * np.trace(linalg.sqrtm(c1 @ c2)).real
    assert distances.gaussian_frechet(mu1, c1, mu2, c2) == pytest.approx(reference, rel=1e-9)
    # symmetric in its two arguments
    assert distances.gaussian_frechet(mu2, c2, mu1, c1) == pytest.approx(reference, rel=1e-9)


def test_fd_with_fewer_points_than_features_is_finite_and_matches_the_regularised_limit(rng):
    a, b = rng.normal(size=(10, 30)), rng.normal(size=(12, 30)) + 0.5  # singular covariances
    fd = distances.frechet_distance(a, b)
    assert np.isfinite(fd) and fd > 0
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eps = 1e-9 * np.eye(30)
    diff = a.mean(0) - b.mean(0)
    limit = diff @ diff + np.trace(ca + cb) - 2 * np.trace(linalg.sqrtm((ca + eps) @ (cb + eps))).real
    assert fd == pytest.approx(limit, rel=1e-4)


def test_fd_one_dimensional_and_bad_shapes(rng):
    a, b = rng.normal(size=(1000, 1)), 2.0 + 3.0 * rng.normal(size=(1000, 1))
    sa, sb = a.std(ddof=1), b.std(ddof=1)
    assert distances.frechet_distance(a, b) == pytest.approx((a.mean() - b.mean()) ** 2 + (sa - sb) ** 2)
    with pytest.raises(ValueError, match="feature dimensions"):
        distances.frechet_distance(a, rng.normal(size=(10, 2)))


# ---- KID ---------------------------------------------------------------------------------------

def test_mmd2_polynomial_matches_brute_force_pairs(rng):
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) + 0.3
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    within_x = np.mean([k(x[i], x[j]) for i in range(6) for j in range(6) if i != j])
    within_y = np.mean([k(y[i], y[j]) for i in range(5) for j in range(5) if i != j])
    cross = np.mean([k(u, v) for u in x for v in y])
    assert distances.mmd2_polynomial(x, y) == pytest.approx(within_x + within_y - 2 * cross, rel=1e-12)


def test_mmd2_linear_kernel_is_the_bias_corrected_squared_mean_difference(rng):
    # with k(u, v) = u.v the unbiased MMD^2 is ||mean_x - mean_y||^2 - tr(S_x)/m - tr(S_y)/n (S unbiased)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + np.array([1.0, 0.0, -0.5])
    diff = x.mean(0) - y.mean(0)
    expected = diff @ diff - np.trace(np.cov(x, rowvar=False)) / 40 - np.trace(np.cov(y, rowvar=False)) / 30
    got = distances.mmd2_polynomial(x, y, degree=1, gamma=1.0, coef0=0.0)
    assert got == pytest.approx(expected, rel=1e-10)


def test_kid_near_zero_for_one_distribution_and_positive_for_a_shift(rng):
    a, b = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    mean, std = distances.kernel_inception_distance(a, b, num_subsets=30, subset_size=200, rng=rng)
    assert std > 0 and abs(mean) < 3 * std
    far, far_std = distances.kernel_inception_distance(a, b + 1.0, num_subsets=30, subset_size=200, rng=rng)
    assert far > 10 * far_std / math.sqrt(30) and far > 20 * abs(mean)


def test_kid_subset_size_is_capped_and_validated(rng):
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(20, 4))
    mean, std = distances.kernel_inception_distance(a, b, num_subsets=3, subset_size=1000, rng=rng)
    assert np.isfinite(mean) and np.isfinite(std)
    with pytest.raises(ValueError, match=r"subset_size >= 2; got \d+, 1$"):
        distances.kernel_inception_distance(a, b, subset_size=1, rng=rng)


# ---- energy distance ---------------------------------------------------------------------------

def test_energy_distance_matches_brute_force_u_statistics(rng):
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(4, 2))
    d = lambda u, v: np.linalg.norm(u - v)  # noqa: E731
    cross = np.mean([d(u, v) for u in x for v in y])
    within_x = np.mean([d(x[i], x[j]) for i in range(5) for j in range(5) if i != j])
    within_y = np.mean([d(y[i], y[j]) for i in range(4) for j in range(4) if i != j])
    assert distances.energy_distance(x, y) == pytest.approx(2 * cross - within_x - within_y, rel=1e-12)


def test_energy_distance_near_zero_for_one_distribution_and_closed_form_for_a_shift(rng):
    a, b = rng.normal(size=(1500, 1)), rng.normal(size=(1500, 1))
    assert abs(distances.energy_distance(a, b)) < 0.02
    # N(0, 1) vs N(delta, 1): 2 E|N(delta, 2)| - 2 E|N(0, 2)|,
    # with E|N(m, s^2)| = s sqrt(2/pi) exp(-m^2 / 2s^2) + m (1 - 2 Phi(-m/s))
    delta, s = 1.5, math.sqrt(2)
    e_abs = s * math.sqrt(2 / math.pi) * math.exp(-delta**2 / (2 * s**2)) + delta * (1 - 2 * stats.norm.cdf(-delta / s))
    expected = 2 * e_abs - 2 * s * math.sqrt(2 / math.pi)
    # quantile grids instead of random draws take the sampling noise (sd ~0.05 here) out of the check
    grid = stats.norm.ppf((np.arange(2000) + 0.5) / 2000)[:, None]
    assert distances.energy_distance(grid, grid + delta) == pytest.approx(expected, abs=0.005)
    assert distances.energy_distance(a, b + delta) == pytest.approx(expected, abs=0.25)


# ---- sliced Wasserstein ------------------------------------------------------------------------

def test_sliced_wasserstein_in_one_dimension_is_w2_of_sorted_samples(rng):
    x, y = rng.normal(size=(300, 1)), rng.exponential(size=(300, 1))
    w2 = math.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2))
    assert distances.sliced_wasserstein(x, y, num_projections=5, rng=rng) == pytest.approx(w2, rel=1e-12)


def test_sliced_wasserstein_small_for_one_distribution_and_closed_form_for_a_shift(rng):
    a, b = rng.normal(size=(800, 4)), rng.normal(size=(800, 4))
    assert distances.sliced_wasserstein(a, b, rng=rng) < 0.12
    # a shift by v moves each projection by u.v: SW2^2 = E[(u.v)^2] = |v|^2 / d
    shift = np.array([2.0, 0.0, 0.0, 0.0])
    got = distances.sliced_wasserstein(a, a + shift, num_projections=4000, rng=rng)
    assert got == pytest.approx(2.0 / math.sqrt(4), rel=0.05)
    assert got > 5 * distances.sliced_wasserstein(a, b, rng=rng)


def test_sliced_wasserstein_with_unequal_sizes(rng):
    x = rng.normal(size=(400, 1))
    y = np.concatenate([x, x]) + 0.7  # the same empirical distribution, twice the points, shifted
    assert distances.sliced_wasserstein(x, y, num_projections=3, rng=rng) == pytest.approx(0.7, rel=0.02)
    a, b = rng.normal(size=(500, 3)), rng.normal(size=(300, 3))
    assert distances.sliced_wasserstein(a, b, rng=rng) < 0.15


def test_polynomial_mmd_by_products_equals_numpys_power_to_float64_rounding():
    """mmd2_polynomial raises its kernel to the degree by repeated products (numpy's ** 3 calls pow() per
    element): the estimate equals the textbook formula with ** to float64 rounding, for degrees 1 to 4."""
    from diffmem.metrics import distances

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(60, 16)), rng.normal(0.3, 1.0, size=(50, 16))
    for degree in (1, 2, 3, 4):
        k = lambda a, b, p=degree: (a @ b.T / 16 + 1.0) ** p  # noqa: E731
        kxx, kyy = k(x, x), k(y, y)
        want = ((kxx.sum() - np.trace(kxx)) / (60 * 59) + (kyy.sum() - np.trace(kyy)) / (50 * 49)
                - 2 * k(x, y).mean())
        got = distances.mmd2_polynomial(x, y, degree=degree)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-14), degree
    base = rng.uniform(0.5, 2.0, size=(100, 100))
    assert np.max(np.abs(distances._power(base, 3) / base**3 - 1)) < 1e-15


def test_kid_averages_mmd2_polynomial_over_the_subsets_it_draws(rng):
    """KID is the mean and std of mmd2_polynomial over its subsets, drawn a then b per subset from rng:
    bit for bit, whatever the kernel's in-place arithmetic."""
    a, b = rng.normal(size=(90, 12)), rng.normal(0.2, 1.0, size=(70, 12))
    for degree, gamma, coef0 in ((3, None, 1.0), (2, 0.5, 0.0), (1, 1.0, 2.0)):
        draws = np.random.default_rng(11)
        values = []
        for _ in range(7):
            ia, ib = draws.choice(90, 40, replace=False), draws.choice(70, 40, replace=False)
            values.append(distances.mmd2_polynomial(a[ia], b[ib], degree=degree, gamma=gamma, coef0=coef0))
        got = distances.kernel_inception_distance(a, b, degree=degree, gamma=gamma, coef0=coef0, num_subsets=7,
                                                  subset_size=40, rng=np.random.default_rng(11))
        assert got == (float(np.mean(values)), float(np.std(values))), degree


def test_polynomial_kernel_is_the_textbook_formula_bit_for_bit(rng):
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(20, 8))
    for degree in (1, 2, 3, 4):
        want = distances._power(0.125 * (x @ y.T) + 1.0, degree)
        assert np.array_equal(distances.polynomial_kernel(x, y, degree=degree, gamma=0.125), want), degree
        base = 0.125 * (x @ x.T) + 1.0
        manual = base.copy()
        for _ in range(degree - 1):
            manual *= base
        assert np.array_equal(distances.polynomial_kernel(x, x, degree=degree, gamma=0.125), manual), degree


def test_fd_from_the_reference_moments_computed_once_is_the_same_number(rng):
    a, b = rng.normal(size=(50, 7)), rng.normal(size=(80, 7)) + 0.3
    mean, cov = distances.gaussian_moments(b)
    assert np.array_equal(mean, b.mean(0)) and np.array_equal(cov, np.cov(b, rowvar=False))
    assert distances.frechet_distance(a, b, moments_b=(mean, cov)) == distances.frechet_distance(a, b)


def test_mmd2_equals_the_numpy_formula_bit_for_bit(rng):
    # the array methods (trace, sum / count) in place of np.trace and np.mean: the same float64 operations
    x, y = rng.normal(size=(40, 5)), rng.normal(size=(30, 5))
    kxx, kyy, kxy = (distances.polynomial_kernel(u, v, gamma=0.2) for u, v in ((x, x), (y, y), (x, y)))
    want = float((kxx.sum() - np.trace(kxx)) / (40 * 39) + (kyy.sum() - np.trace(kyy)) / (30 * 29) - 2.0 * kxy.mean())
    assert distances.mmd2_polynomial(x, y, gamma=0.2) == want
