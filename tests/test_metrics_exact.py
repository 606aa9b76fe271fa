"""Exact synthetic densities, population and empirical optimal denoisers, denoiser errors."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from diffmem.metrics import exact

# ---- densities ---------------------------------------------------------------------------------

def test_gaussian_logpdf_matches_scipy(rng):
    x = rng.normal(size=(10, 3))
    dist = exact.IsotropicGaussian(dim=3, mean=0.5, std=2.0)
    assert np.allclose(dist.logpdf(x), stats.multivariate_normal(np.full(3, 0.5), 4 * np.eye(3)).logpdf(x))
    vec = exact.IsotropicGaussian(dim=3, mean=np.array([1.0, -1.0, 0.0]))
    assert np.allclose(vec.logpdf(x), stats.multivariate_normal([1.0, -1.0, 0.0]).logpdf(x))


def test_gmm_logpdf_matches_scipy_mixture(rng):
    x = 2 * rng.normal(size=(10, 2))
    g = exact.SymmetricGMM(dim=2, mu=1.5)
    mix = 0.5 * stats.multivariate_normal([1.5, 1.5]).pdf(x) + 0.5 * stats.multivariate_normal([-1.5, -1.5]).pdf(x)
    assert np.allclose(g.logpdf(x), np.log(mix))
    # far out in the tails the log density stays finite and correct
    far = np.array([[60.0, 60.0]])
    assert g.logpdf(far)[0] == pytest.approx(stats.multivariate_normal([1.5, 1.5]).logpdf(far) - math.log(2))


def test_smoothed_densities_are_convolutions(rng):
    # a KDE of many samples with width h approaches the density convolved with N(0, h^2 I)
    for dist in (exact.IsotropicGaussian(dim=2, mean=0.5, std=0.7), exact.SymmetricGMM(dim=2, mu=1.5, std=0.6)):
        smooth = dist.smoothed(0.4)
        x = smooth.sample(20000, rng)
        assert np.allclose(x.var(0), dist.sample(20000, rng).var(0) + 0.16, rtol=0.05)
        assert dist.smoothed(0.0) == dist
    gmm = exact.SymmetricGMM(dim=2, mu=1.5, std=0.6).smoothed(0.8)
    assert gmm.std == pytest.approx(1.0)
    x = rng.normal(size=(5, 2))
    assert np.allclose(gmm.logpdf(x), exact.SymmetricGMM(dim=2, mu=1.5).logpdf(x))


def test_samples_have_the_right_moments(rng):
    g = exact.IsotropicGaussian(dim=2, mean=1.0, std=0.5).sample(20000, rng)
    assert np.allclose(g.mean(0), 1.0, atol=0.02) and np.allclose(g.std(0), 0.5, atol=0.02)
    m = exact.SymmetricGMM(dim=3, mu=2.0).sample(20000, rng)
    assert np.allclose(m.mean(0), 0.0, atol=0.05)
    assert np.allclose(m.var(0), 1 + 4.0, rtol=0.03)  # within-component 1 plus mu^2
    assert np.mean(m.sum(1) > 0) == pytest.approx(0.5, abs=0.02)


def test_mean_loglik_of_true_samples_is_minus_the_entropy(rng):
    dist = exact.IsotropicGaussian(dim=4, std=1.5)
    entropy = 4 * (0.5 * math.log(2 * math.pi * math.e) + math.log(1.5))
    assert exact.mean_loglik(dist.sample(40000, rng), dist) == pytest.approx(-entropy, abs=0.03)


# ---- population denoisers ----------------------------------------------------------------------

def _mc_posterior_mean(prior_draws, x, sigma):
    """Brute force: E[x0 | x] by self-normalised importance sampling with prior draws."""
    logw = -((x[None, :] - prior_draws) ** 2).sum(1) / (2 * sigma**2)
    w = np.exp(logw - logw.max())
    return (w[:, None] * prior_draws).sum(0) / w.sum()


@pytest.mark.parametrize("dim", [1, 3])
def test_gmm_population_denoiser_matches_monte_carlo_posterior_mean(dim):
    rng = np.random.default_rng(1)
    g = exact.SymmetricGMM(dim=dim, mu=1.0)
    prior = g.sample(400000, rng)
    sigma = 0.8
    points = np.array([[-1.0] * dim, [0.3] * dim, [1.2] + [-0.4] * (dim - 1)])
    closed = g.denoise(points, sigma)
    for point, value in zip(points, closed):
        assert np.allclose(value, _mc_posterior_mean(prior, point, sigma), atol=0.02)


def test_gmm_denoiser_with_narrow_components_matches_monte_carlo():
    rng = np.random.default_rng(7)
    g = exact.SymmetricGMM(dim=1, mu=1.0, std=0.3)
    prior = g.sample(400000, rng)
    for point in (-0.2, 0.1, 0.9):
        closed = g.denoise(np.array([[point]]), 0.5)[0, 0]
        assert closed == pytest.approx(_mc_posterior_mean(prior, np.array([point]), 0.5)[0], abs=0.01)


def test_gmm_denoiser_limits():
    g = exact.SymmetricGMM(dim=2, mu=2.0)
    x = np.array([[3.0, 1.0], [-0.5, -4.0]])
    assert np.allclose(g.denoise(x, 1e-4), x, atol=1e-6)  # no noise: the identity
    assert np.allclose(g.denoise(x, 1e4), 0.0, atol=1e-3)  # all noise: the data mean
    assert np.allclose(g.denoise(np.zeros((1, 2)), 0.7), 0.0)  # symmetric point: responsibilities 1/2


def test_gaussian_population_denoiser_is_shrinkage_and_matches_monte_carlo():
    rng = np.random.default_rng(4)
    dist = exact.IsotropicGaussian(dim=1, mean=0.5, std=2.0)
    prior = dist.sample(400000, rng)
    x = np.array([[-1.0], [3.0]])
    closed = dist.denoise(x, 1.5)
    assert np.allclose(closed, 0.5 + 4.0 / (4.0 + 2.25) * (x - 0.5))
    for point, value in zip(x, closed):
        assert value[0] == pytest.approx(_mc_posterior_mean(prior, point, 1.5)[0], abs=0.02)


def test_denoisers_keep_the_input_type_and_accept_per_row_sigma():
    g = exact.SymmetricGMM(dim=2)
    x32 = torch.tensor([[0.5, 0.1], [-2.0, 1.0]], dtype=torch.float32)
    out = g.denoise(x32, torch.tensor([0.5, 2.0]))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    per_row = g.denoise(x32.double().numpy(), np.array([0.5, 2.0]))
    assert isinstance(per_row, np.ndarray)
    assert np.allclose(per_row[0], g.denoise(x32.double().numpy()[:1], 0.5)[0])
    assert np.allclose(per_row[1], g.denoise(x32.double().numpy()[1:], 2.0)[0])
    assert np.allclose(out.numpy(), per_row, atol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        g.denoise(x32, 0.0)


# ---- empirical optimal denoiser ----------------------------------------------------------------

def test_empirical_denoiser_matches_brute_force_softmax():
    rng = np.random.default_rng(2)
    train = torch.as_tensor(rng.normal(size=(37, 5)))
    x = torch.as_tensor(rng.normal(size=(6, 5)))
    sigma = torch.linspace(0.3, 1.5, 6, dtype=torch.float64)
    logits = -((x[:, None] - train[None]) ** 2).sum(-1) / (2 * sigma[:, None] ** 2)
    brute = torch.softmax(logits, dim=1) @ train
    for chunk in (5, 37, 1000):  # several chunks, one exact chunk, one oversize chunk
        assert torch.allclose(exact.empirical_denoiser(x, sigma, train, chunk=chunk), brute, atol=1e-12)
    as_numpy = exact.empirical_denoiser(x.numpy(), sigma.numpy(), train.numpy())
    assert isinstance(as_numpy, np.ndarray) and np.allclose(as_numpy, brute.numpy(), atol=1e-12)


def test_empirical_denoiser_limits():
    rng = np.random.default_rng(3)
    train = rng.uniform(-1, 1, size=(50, 64))
    # small sigma: the nearest training point, even from float32 input (logits are float64 inside)
    x = torch.as_tensor(train[7] + 1e-3 * rng.normal(size=64), dtype=torch.float32)[None]
    out = exact.empirical_denoiser(x, 0.01, train)
    assert out.dtype == torch.float32 and torch.allclose(out[0].double(), torch.as_tensor(train[7]), atol=1e-6)
    # huge sigma: every weight equal, the training mean
    assert np.allclose(exact.empirical_denoiser(train[:3], 1e4, train), train.mean(0), atol=1e-3)
    # a single training point is the answer for every input
    assert np.allclose(exact.empirical_denoiser(rng.normal(size=(4, 64)), 0.5, train[:1]), train[0])


def test_empirical_denoiser_float32_input_matches_float64_reference():
    rng = np.random.default_rng(6)
    train = rng.uniform(-1, 1, size=(200, 64))
    x = train[:5] + 0.05 * rng.normal(size=(5, 64))
    sigma = 0.05  # logits of size |x|^2 / sigma^2 ~ 1e4: float32 distances would scramble the softmax
    ref = exact.empirical_denoiser(x, sigma, train)
    got = exact.empirical_denoiser(torch.as_tensor(x, dtype=torch.float32), sigma, train)
    assert np.allclose(got.double().numpy(), ref, atol=1e-5)


# ---- denoiser errors ---------------------------------------------------------------------------

def test_denoiser_errors_known_answers():
    g = exact.SymmetricGMM(dim=2, mu=1.5)
    train = g.sample(20, np.random.default_rng(0))
    sigmas = [0.1, 0.5, 2.0]
    kwargs = dict(train=train, true_dist=g, sigmas=sigmas, num_probe=300, dtype=torch.float64)
    pop = exact.denoiser_errors(g.denoise, rng=np.random.default_rng(1), **kwargs)
    emp = exact.denoiser_errors(lambda x, s: exact.empirical_denoiser(x, s, train), rng=np.random.default_rng(1),
                                **kwargs)
    assert np.all(pop["pop"] < 1e-20) and np.all(emp["emp"] < 1e-20)
    # same probes: each one's error against the other reference is the gap between the references
    assert np.allclose(pop["emp"], pop["pop_vs_emp"]) and np.allclose(emp["pop"], emp["pop_vs_emp"])
    assert np.allclose(pop["pop_vs_emp"], emp["pop_vs_emp"])
    assert pop["emp"][0] > 1e-3  # at small sigma the empirical denoiser snaps to training points
    # batching the probes changes nothing
    batched = exact.denoiser_errors(g.denoise, rng=np.random.default_rng(1), batch_size=7, **kwargs)
    assert all(np.allclose(batched[k], pop[k]) for k in pop)


def test_denoiser_errors_empirical_approaches_population_with_more_data():
    g = exact.SymmetricGMM(dim=2, mu=1.5)
    gaps = []
    for n in (8, 4000):
        train = g.sample(n, np.random.default_rng(n))
        errs = exact.denoiser_errors(g.denoise, train=train, true_dist=g, sigmas=[1.0], num_probe=500,
                                     rng=np.random.default_rng(0))
        gaps.append(errs["pop_vs_emp"][0])
    assert gaps[1] < 0.1 * gaps[0]


def test_denoiser_errors_calls_the_denoiser_in_float32_by_default():
    seen = []

    def identity(x, s):
        seen.append((x.dtype, s.dtype, tuple(s.shape)))
        return x

    g = exact.IsotropicGaussian(dim=3)
    errs = exact.denoiser_errors(identity, train=g.sample(10, np.random.default_rng(0)), true_dist=g, sigmas=[1.0],
                                 num_probe=64, rng=np.random.default_rng(1))
    assert seen == [(torch.float32, torch.float32, (64,))]
    # identity vs shrinkage by 1/2 at sigma = 1: E||x/2||^2 / d = (1 + 1) / 4 per coordinate
    assert errs["pop"][0] == pytest.approx(0.5, rel=0.2)


def test_gaussian_kl_closed_form_against_known_answers_and_monte_carlo():
    d = 5
    eye = np.eye(d)
    assert exact.gaussian_kl(np.zeros(d), eye, np.zeros(d), eye) == pytest.approx(0.0, abs=1e-12)
    # isotropic scale a against the unit Gaussian: d/2 (a - 1 - ln a); a shifted mean adds |m|^2 / 2
    a, m = 2.5, np.full(d, 0.3)
    assert exact.gaussian_kl(m, a * eye, np.zeros(d), eye) == pytest.approx(
        d / 2 * (a - 1 - math.log(a)) + float(m @ m) / 2, rel=1e-12)
    # a general pair against a Monte Carlo mean of log p - log q
    rng = np.random.default_rng(0)
    g = rng.normal(size=(d, d))
    cov_p, cov_q = g @ g.T / d + 0.5 * eye, np.diag(rng.uniform(0.5, 2.0, size=d))
    mean_p, mean_q = rng.normal(size=d), rng.normal(size=d)
    x = rng.multivariate_normal(mean_p, cov_p, size=400_000)
    log_ratio = (stats.multivariate_normal(mean_p, cov_p).logpdf(x)
                 - stats.multivariate_normal(mean_q, cov_q).logpdf(x))
    kl = exact.gaussian_kl(mean_p, cov_p, mean_q, cov_q)
    assert kl == pytest.approx(float(log_ratio.mean()), abs=4 * float(log_ratio.std()) / math.sqrt(len(x)))
    assert kl > 0


def test_gaussian_kl_of_a_degenerate_gaussian_is_infinite():
    d = 4
    q = np.random.default_rng(1).normal(size=(d, 2))
    assert exact.gaussian_kl(np.zeros(d), q @ q.T, np.zeros(d), np.eye(d)) == math.inf
    with pytest.raises(np.linalg.LinAlgError):
        exact.gaussian_kl(np.zeros(d), np.eye(d), np.zeros(d), q @ q.T)
