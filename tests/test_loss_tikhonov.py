"""train.tikhonov: the Tikhonov penalty on a trained network's score (Baptista et al., arXiv 2501.15785).

The penalized loss lambda(sigma) [mean (D - x0)^2 + c mean (D - x)^2 / sigma^2] must (i) be the plain loss at
c = 0, bit for bit, (ii) have at every sigma the closed-form Tikhonov denoiser as its minimizer over all
functions, whatever the weighting lambda (EDM or DDPM), and (iii) leave the configs and hashes of runs
without it unchanged.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from diffmem.config import (
    ConfigError,
    ModelConfig,
    TrainConfig,
    expand_sweeps,
    sweep_of,
    validate_config,
    without_quiet_defaults,
)
from diffmem.engine import make_step_loss, trajectory_hash
from diffmem.families.empirical import ConsistencyDenoiser, TikhonovDenoiser
from diffmem.loss import denoising_loss
from diffmem.models import build_denoiser


class ConstantDenoiser(nn.Module):
    """D(x, sigma) = d for every input: a free output vector, to minimize the loss over pointwise."""

    def __init__(self, d: torch.Tensor, weight) -> None:
        super().__init__()
        self.d = nn.Parameter(d.clone())
        self.weight = weight

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.d.expand_as(x)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.weight(sigma)


WEIGHTS = {
    "edm": lambda s: (s**2 + 0.25) / (s * 0.5) ** 2,
    "ddpm": lambda s: 1 / s**2,
}


@pytest.mark.parametrize("weight", list(WEIGHTS))
@pytest.mark.parametrize("sigma", [0.05, 0.3, 2.0])
@pytest.mark.parametrize("c", [1e-3, 0.05, 1.0])
def test_the_penalized_loss_is_minimized_by_the_tikhonov_denoiser(weight, sigma, c):
    """E over the empirical posterior of x0 given x of the penalized loss, as a function of D(x, sigma) = d:
    its gradient vanishes at TikhonovDenoiser(strength=c) and every other d scores higher."""
    gen = torch.Generator().manual_seed(4)
    train = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    x = torch.tensor([[0.4, -0.1, 0.2]], dtype=torch.float64)
    w = torch.softmax(-((x - train) ** 2).sum(1) / (2 * sigma**2), 0)  # posterior over x0 = x_i given x
    sig = torch.full((train.shape[0],), sigma, dtype=torch.float64)
    noise = (x - train) / sigma  # the noise that takes each x_i to x

    def expected_loss(d: torch.Tensor) -> torch.Tensor:
        den = ConstantDenoiser(d, WEIGHTS[weight])
        return (w * denoising_loss(den, train, sig, noise, tikhonov=c)).sum(), den

    d_c = TikhonovDenoiser(train, strength=c)(x, sigma)[0]
    loss, den = expected_loss(d_c)
    (grad,) = torch.autograd.grad(loss, den.d)
    assert grad.abs().max() < 1e-10 * max(1.0, float(loss.detach()))
    for delta in torch.randn(5, 3, generator=gen, dtype=torch.float64):
        assert float(expected_loss(d_c + 0.05 * delta)[0]) > float(loss)
    # the penalty moved the minimizer away from the empirical posterior mean (the c = 0 minimizer)
    assert torch.linalg.norm(d_c - w @ train) > 1e-6


def test_zero_penalty_is_the_plain_loss_bit_for_bit():
    torch.manual_seed(0)
    net = build_denoiser(ModelConfig(width=16, depth=1, emb_dim=8), data_shape=(6,))
    x0 = torch.randn(32, 6)
    sigma = torch.exp(torch.randn(32) * 1.2 - 1.2)
    noise = torch.randn(32, 6)
    by_formula = net.loss_weight(sigma) * (net(x0 + sigma[:, None] * noise, sigma) - x0).pow(2).mean(1)
    assert torch.equal(denoising_loss(net, x0, sigma, noise), by_formula)
    assert torch.equal(denoising_loss(net, x0, sigma, noise, tikhonov=0.0), by_formula)
    c = 0.01
    x = x0 + sigma[:, None] * noise
    d = net(x, sigma)
    penalized = net.loss_weight(sigma) * ((d - x0).pow(2).mean(1) + c * (d - x).pow(2).mean(1) / sigma**2)
    torch.testing.assert_close(denoising_loss(net, x0, sigma, noise, tikhonov=c), penalized)


def test_the_penalty_turns_the_gradients_by_hand_off():
    base = build_denoiser(ModelConfig(width=16, depth=1, emb_dim=8), data_shape=(6,))
    cpu = torch.device("cpu")
    assert hasattr(make_step_loss(base, TrainConfig(), cpu), "by_hand")
    assert not hasattr(make_step_loss(base, TrainConfig(tikhonov=0.01), cpu), "by_hand")


def test_zero_penalty_leaves_the_trajectory_hash_and_result_keys_unchanged():
    model = ModelConfig(width=16, depth=1, emb_dim=8)
    x = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
    plain = TrainConfig()
    assert "tikhonov" not in without_quiet_defaults("train", dataclasses.asdict(plain))
    assert "tikhonov" in without_quiet_defaults("train", dataclasses.asdict(TrainConfig(tikhonov=0.01)))
    h0 = trajectory_hash(model, plain, x_train=x, seed=0)
    assert h0 == trajectory_hash(model, TrainConfig(tikhonov=0.0), x_train=x, seed=0)
    assert h0 != trajectory_hash(model, TrainConfig(tikhonov=0.01), x_train=x, seed=0)


def _config(model: dict, train: dict) -> dict:
    return {"experiments": {"t": {"data": {"dataset": "digits", "n_train": [16], "seeds": [0]},
                                  "model": model, "train": train}}, "run": ["t"]}


def test_a_list_of_penalties_is_a_sweep_of_train_leaves():
    cfg = validate_config(_config({"arch": "mlp"}, {"tikhonov": [0.0, 0.01]}))
    exp = cfg["experiments"]["t"]
    assert sweep_of(exp) == ("tikhonov", [0.0, 0.01])
    leaves = expand_sweeps(cfg["experiments"])
    assert list(leaves) == ["t/tikhonov0", "t/tikhonov0.01"]
    assert [leaf["train"]["tikhonov"] for leaf in leaves.values()] == [0.0, 0.01]
    assert all(leaf["model"] == exp["model"] for leaf in leaves.values())


def test_the_penalty_is_refused_outside_trained_networks():
    with pytest.raises(ConfigError, match="train.tikhonov"):
        validate_config(_config({"family": "empirical"}, {"tikhonov": 0.1}))
    with pytest.raises(ConfigError, match="train.tikhonov"):
        validate_config(_config({"family": "empirical", "regularization": "tikhonov"}, {"tikhonov": [0.0, 0.1]}))


def test_typical_floor_is_the_authors_floor_with_tau_scaled_by_exp_minus_half_d():
    """diffmem's consistency (floor_on typical, tau) is the authors' GMM_score_EmpiricalBayes floor on the raw
    kernel sum with tau' = tau e^{-D/2}: one family of estimators, tau reparametrized by a constant."""
    gen = torch.Generator().manual_seed(5)
    dim = 12
    train = torch.randn(20, dim, generator=gen, dtype=torch.float64)
    x = torch.cat([train[:4] + 0.1 * torch.randn(4, dim, generator=gen, dtype=torch.float64),
                   3 * torch.randn(6, dim, generator=gen, dtype=torch.float64)])
    sigma = torch.logspace(-1.3, 0.7, x.shape[0], dtype=torch.float64)
    for tau in (1e-4, 0.1, 10.0):
        typical = ConsistencyDenoiser(train, strength=tau, floor_on="typical")
        raw = ConsistencyDenoiser(train, strength=tau * math.exp(-dim / 2))
        torch.testing.assert_close(typical(x, sigma), raw(x, sigma), rtol=1e-12, atol=1e-12)
        mass = typical.retained_mass(x, sigma)
        assert torch.any(mass < 1) or tau < 1e-3  # the floor binds somewhere but at the smallest tau
