"""Empirical-score denoisers (arXiv 2501.15785): exactness, chunking, sigma -> 0, memorization, regularizers."""

import math

import pytest
import torch

from diffmem.families.empirical import (
    ConsistencyDenoiser,
    EmpiricalDenoiser,
    KernelSmoothedDenoiser,
    TikhonovDenoiser,
)
from diffmem.samplers import heun_sampler


def _data(n: int, d: int, *, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def brute_posterior_mean(x: torch.Tensor, train: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Explicit softmax over all training points, direct differences, float64."""
    d2 = ((x[:, None, :] - train[None, :, :]) ** 2).sum(-1)  # [B, n]
    w = torch.softmax(-d2 / (2 * sigma[:, None] ** 2), dim=1)
    return w @ train


def heun_ode(denoiser, z: torch.Tensor, num_steps: int = 40) -> torch.Tensor:
    """The pipeline's probability-flow ODE sampler (Heun, Karras schedule from 80 to 0.002)."""
    return heun_sampler(denoiser, z, num_steps=num_steps).to(z.dtype)


def memorized_fraction(samples: torch.Tensor, train: torch.Tensor, k: float = 1 / 3) -> float:
    """Fraction of samples whose nearest / second-nearest training distance ratio is < k (arXiv 2505.17638 Eq. 6)."""
    dist = torch.cdist(samples, train)
    two = dist.topk(2, dim=1, largest=False).values
    return float((two[:, 0] / two[:, 1] < k).double().mean())


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 32, 100])
@pytest.mark.parametrize("batch_chunk", [1, 5, 64])
def test_matches_brute_force_posterior_mean(chunk_size, batch_chunk):
    train = 2.0 + _data(32, 5, seed=0)  # off-center on purpose
    x = 2.0 + 1.5 * _data(13, 5, seed=1)
    sigma = torch.logspace(-1.5, 1.0, 13, dtype=torch.float64)
    den = EmpiricalDenoiser(train, chunk_size=chunk_size, batch_chunk=batch_chunk)
    torch.testing.assert_close(den(x, sigma), brute_posterior_mean(x, train, sigma), rtol=1e-10, atol=1e-10)


def test_float32_agrees_with_float64_and_keeps_dtype_and_shape():
    train = _data(40, 12, seed=2)
    x = _data(6, 12, seed=3)
    sigma = torch.full((6,), 0.7, dtype=torch.float64)
    ref = EmpiricalDenoiser(train)(x, sigma)
    den32 = EmpiricalDenoiser(train.float(), chunk_size=16)
    out32 = den32(x.float(), sigma.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), ref, rtol=1e-4, atol=1e-4)
    # image-shaped queries are flattened and restored; a scalar sigma broadcasts
    img = EmpiricalDenoiser(train.reshape(40, 3, 2, 2))(x.reshape(6, 3, 2, 2), 0.7)
    torch.testing.assert_close(img.reshape(6, 12), ref)


def test_small_sigma_returns_nearest_training_point():
    train = _data(50, 6, seed=4)
    x = 1.3 * _data(20, 6, seed=5)
    nearest = train[torch.cdist(x, train).argmin(1)]
    out = EmpiricalDenoiser(train, chunk_size=7)(x, torch.full((20,), 1e-3, dtype=torch.float64))
    torch.testing.assert_close(out, nearest, rtol=0, atol=1e-9)


def test_log_density_matches_explicit_mixture():
    train = _data(9, 3, seed=6)
    x = _data(4, 3, seed=7)
    sigma = torch.tensor([0.3, 0.5, 1.0, 2.0], dtype=torch.float64)
    ref = []
    for xb, sb in zip(x, sigma):
        lp = torch.distributions.Normal(train, sb).log_prob(xb).sum(1)  # [n]
        ref.append(torch.logsumexp(lp, 0) - math.log(9))
    torch.testing.assert_close(EmpiricalDenoiser(train).log_density(x, sigma), torch.stack(ref))


def test_probability_flow_with_empirical_denoiser_lands_on_training_points():
    train = _data(64, 8, seed=8)
    z = _data(200, 8, seed=9)
    samples = heun_ode(EmpiricalDenoiser(train), z)
    assert memorized_fraction(samples, train) > 0.9


def test_tikhonov_limit_and_larger_strength_memorizes_less():
    train = _data(64, 8, seed=8)
    x = 1.2 * _data(10, 8, seed=10)
    sigma = torch.logspace(-2, 1, 10, dtype=torch.float64)
    torch.testing.assert_close(
        TikhonovDenoiser(train, strength=1e-14)(x, sigma), EmpiricalDenoiser(train)(x, sigma), rtol=1e-8, atol=1e-8
    )
    # closed form: x + sigma^2 / (sigma^2 + c) (m - x)
    m = brute_posterior_mean(x, train, sigma)
    c = 0.3
    expect = x + (sigma**2 / (sigma**2 + c))[:, None] * (m - x)
    torch.testing.assert_close(TikhonovDenoiser(train, strength=c)(x, sigma), expect)
    z = _data(200, 8, seed=9)
    fracs = [memorized_fraction(heun_ode(TikhonovDenoiser(train, strength=c), z), train) for c in (1e-12, 0.05, 1.0)]
    assert fracs[0] > 0.9
    assert fracs[0] >= fracs[1] >= fracs[2]
    assert fracs[2] < 0.5


def test_tikhonov_is_the_pointwise_minimizer():
    """At a fixed x the regularized objective E[||sigma s + xi||^2 | x] + c ||s||^2 is minimized by s_c."""
    train = _data(6, 2, seed=11)
    x = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    sigma, c = 0.8, 0.25
    d2 = ((x - train) ** 2).sum(1)
    w = torch.softmax(-d2 / (2 * sigma**2), 0)  # posterior over x0 = x_i given x
    xi = (x - train) / sigma  # [n, 2]: the noise that maps x_i to x

    def objective(s: torch.Tensor) -> torch.Tensor:
        return (w * ((sigma * s + xi) ** 2).sum(1)).sum() + c * (s**2).sum()

    s_c = (TikhonovDenoiser(train, strength=c)(x, sigma) - x)[0] / sigma**2
    s = s_c.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(s), s)
    assert grad.abs().max() < 1e-12
    for delta in torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64):
        assert objective(s_c + 0.1 * delta) > objective(s_c)


def test_consistency_limits_and_mass():
    train = _data(32, 4, seed=12)
    x = 1.5 * _data(16, 4, seed=13)
    sigma = torch.logspace(-1, 0.5, 16, dtype=torch.float64)
    emp = EmpiricalDenoiser(train)(x, sigma)
    torch.testing.assert_close(ConsistencyDenoiser(train, strength=0.0)(x, sigma), emp)
    torch.testing.assert_close(ConsistencyDenoiser(train, strength=1e-300)(x, sigma), emp)
    # a floor far above every kernel sum (<= n) keeps (almost) no mass: the score vanishes, x0_hat = x
    torch.testing.assert_close(ConsistencyDenoiser(train, strength=1e12)(x, sigma), x, rtol=0, atol=1e-9)
    # explicit weights exp(l_i - max(logsumexp l, log tau)), floored on the kernel sum
    tau = 0.2
    logits = -((x[:, None] - train[None]) ** 2).sum(-1) / (2 * sigma[:, None] ** 2)
    norm = torch.logsumexp(logits, 1).clamp_min(math.log(tau))
    w = torch.exp(logits - norm[:, None])
    expect = w @ train + (1 - w.sum(1))[:, None] * x
    den = ConsistencyDenoiser(train, strength=tau, chunk_size=5)
    torch.testing.assert_close(den(x, sigma), expect)
    mass = den.retained_mass(x, sigma)
    assert torch.all((mass > 0) & (mass <= 1))
    assert torch.any(mass < 1)
    # the "density" floor is the same construction on the normalized mixture density
    dens = ConsistencyDenoiser(train, strength=1e-3, floor_on="density")
    logp = EmpiricalDenoiser(train).log_density(x, sigma)
    torch.testing.assert_close(dens.retained_mass(x, sigma), torch.exp(logp - logp.clamp_min(math.log(1e-3))))


def test_consistency_floor_reduces_memorization():
    train = _data(64, 8, seed=8)
    z = _data(200, 8, seed=9)
    base = memorized_fraction(heun_ode(ConsistencyDenoiser(train, strength=0.0), z), train)
    floored = memorized_fraction(heun_ode(ConsistencyDenoiser(train, strength=0.5), z), train)
    assert base > 0.9
    assert floored < base - 0.3


def test_kernel_smoothing_reduces_memorization():
    train = _data(64, 8, seed=8)
    z = _data(200, 8, seed=9)
    assert memorized_fraction(heun_ode(KernelSmoothedDenoiser(train, bandwidth=1.0), z), train) < 0.5


def test_kernel_smoothed_matches_quadrature_in_1d():
    """E[x0 | x] for x0 ~ KDE(train, h), x = x0 + sigma z, by brute-force quadrature over x0."""
    train = torch.tensor([[-1.0], [0.2], [1.5]], dtype=torch.float64)
    h = 0.4
    grid = torch.linspace(-8, 8, 200_001, dtype=torch.float64)
    kde = torch.exp(-((grid[:, None] - train[:, 0]) ** 2) / (2 * h**2)).sum(1)  # unnormalized prior on x0
    den = KernelSmoothedDenoiser(train, bandwidth=h)
    for xv, sv in [(0.1, 0.3), (1.0, 1.0), (-2.0, 0.05), (3.0, 2.5)]:
        post = kde * torch.exp(-((xv - grid) ** 2) / (2 * sv**2))
        expect = (grid * post).sum() / post.sum()
        out = den(torch.tensor([[xv]], dtype=torch.float64), torch.tensor([sv], dtype=torch.float64))
        assert abs(float(out) - float(expect)) < 1e-8
    x = _data(5, 1, seed=14)
    sigma = torch.full((5,), 0.3, dtype=torch.float64)
    out = KernelSmoothedDenoiser(train, bandwidth=0.0)(x, sigma)
    torch.testing.assert_close(out, brute_posterior_mean(x, train, sigma))


def test_rejects_nonpositive_sigma():
    den = EmpiricalDenoiser(_data(4, 2, seed=0))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        den(torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))


def test_typical_floor_keeps_the_mass_next_to_training_points_in_high_dimension():
    gen = torch.Generator().manual_seed(3)
    dim = 64
    train = torch.randn(30, dim, generator=gen, dtype=torch.float64) * 3
    sigma = 0.05
    x = train[:5] + sigma * torch.randn(5, dim, generator=gen, dtype=torch.float64)  # noisy copies
    # the log kernel sum of a noisy copy is -||z||^2 / 2 = -D/2 +- sqrt(D/2) (about -32 +- 6 here)
    raw = ConsistencyDenoiser(train, strength=1e-4)  # the authors' floor on the raw kernel sum
    typical = ConsistencyDenoiser(train, strength=1e-4, floor_on="typical")
    assert float(raw.retained_mass(x, sigma).max()) < 1e-6  # wiped out: the sampler would never denoise
    assert float(typical.retained_mass(x, sigma).min()) > 0.99
    far = torch.zeros(3, dim, dtype=torch.float64) + 20.0  # far from every training point
    assert float(typical.retained_mass(far, sigma).max()) < 1e-3
