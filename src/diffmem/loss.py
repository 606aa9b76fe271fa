"""Denoising score-matching loss and the noise-level distributions used in training.

`denoising_loss(denoiser, x0, sigma, noise)` returns the per-sample weighted loss
lambda(sigma) * mean_j (D(x0 + sigma noise; sigma) - x0)_j^2 (Karras et al. 2022, Eq. 2 and 8);
reduce it in the training loop. For the DDPM parameterisation lambda = 1/sigma^2 makes it the
epsilon-prediction loss of Ho et al. 2020, the loss of arXiv 2505.17638.

`tikhonov` = c > 0 adds the Tikhonov penalty on the score s = (D - x)/sigma^2 of Baptista et al.
(arXiv 2501.15785; the authors' network experiment, DiffusionModelDynamics/2DGaussianPoints/
VE_NNTikhonov.ipynb, trains mean_j (sigma s + xi)_j^2 + c mean_j s_j^2 per sample, xi the noise).
Since D - x0 = sigma (sigma s + xi), diffmem's error term is sigma^2 mean_j (sigma s + xi)_j^2, so the
penalty is added at the same scale, sigma^2 c mean_j s_j^2 = c mean_j (D - x)_j^2 / sigma^2, and
multiplied by the same lambda(sigma):

    loss = lambda(sigma) [mean_j (D - x0)_j^2 + c mean_j (D - x)_j^2 / sigma^2].

At every sigma the minimizer over all functions is then the same whatever lambda: the Tikhonov score
s_c = (E[x0 | x] - x) / (sigma^2 + c), i.e. D_c = x + sigma^2 / (sigma^2 + c) (E[x0 | x] - x), which on the
training set's empirical distribution is `families.empirical.TikhonovDenoiser(strength=c)` (tested in
tests/test_loss_tikhonov.py). lambda only decides how the network's capacity is spread over sigma.

The training noise levels are drawn in two parts: `sigma_draw` (the random numbers, from one
member's generator) and `sigma_from_draw` (the deterministic map to sigma, elementwise, so a
stack of k models maps its [k, B] draws in one call). `sample_sigma` is the two together.
"""

from __future__ import annotations

import torch


def denoising_loss(denoiser, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, *,
                   tikhonov: float = 0.0) -> torch.Tensor:
    """Per-sample loss, shaped like sigma, for clean data x0, noise levels sigma and noise.

    One model: x0 [B, ...], sigma [B]. A stack of k models: x0 [k, B, ...], sigma [k, B], and a
    `denoiser` that takes them so (models.stacked.StackedDenoiser). The leading dimensions are sigma's.
    `tikhonov` > 0 adds the penalty c mean_j (D - x)_j^2 / sigma^2 inside lambda(sigma) (module docstring);
    at 0 the loss is computed exactly as without it.
    """
    lead = sigma.ndim
    s = sigma.reshape(*sigma.shape, *([1] * (x0.ndim - lead)))
    x = x0 + s * noise
    x0_hat = denoiser(x, sigma)
    err = (x0_hat - x0).pow(2).reshape(*x0.shape[:lead], -1).mean(dim=lead)
    if tikhonov > 0:
        step = (x0_hat - x).pow(2).reshape(*x0.shape[:lead], -1).mean(dim=lead)  # sigma^4 mean_j s_j^2
        err = err + tikhonov * step / sigma**2
    return denoiser.loss_weight(sigma) * err


def sigma_draw(num: int, *, parameterization: str, vp_sigmas: torch.Tensor | None, generator: torch.Generator,
               device: torch.device) -> torch.Tensor:
    """The random part of a noise-level draw [num]: standard normals (edm) or timestep indices (ddpm)."""
    if parameterization == "edm":
        return torch.randn(num, generator=generator, device=device)
    if vp_sigmas is None:
        raise ValueError("the ddpm parameterisation needs its sigma schedule (vp_sigmas)")
    return torch.randint(0, vp_sigmas.shape[0], (num,), generator=generator, device=device)


def sigma_from_draw(draw: torch.Tensor, *, parameterization: str, p_mean: float, p_std: float,
                    vp_sigmas: torch.Tensor | None) -> torch.Tensor:
    """The deterministic part, elementwise: log-normal sigma (EDM) or sigma_t at the drawn timestep (DDPM)."""
    if parameterization == "edm":
        return (p_mean + p_std * draw).exp()
    return vp_sigmas.to(draw.device)[draw].float()


def sample_sigma(
    num: int, *, parameterization: str, p_mean: float, p_std: float, vp_sigmas: torch.Tensor | None,
    generator: torch.Generator, device: torch.device,
) -> torch.Tensor:
    """Training noise levels [num]: log-normal (EDM) or sigma_t at a uniform timestep (DDPM)."""
    draw = sigma_draw(num, parameterization=parameterization, vp_sigmas=vp_sigmas, generator=generator, device=device)
    return sigma_from_draw(draw, parameterization=parameterization, p_mean=p_mean, p_std=p_std, vp_sigmas=vp_sigmas)
