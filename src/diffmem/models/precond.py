"""Preconditioning wrappers: every network is called as `denoiser(x, sigma) -> x0_hat`.

Noise convention everywhere in diffmem: variance exploding, x = x0 + sigma * z (Karras et al. 2022,
"Elucidating the design space...", arXiv 2206.00364, Eq. 7 and Table 1).

- `EDMPrecond`: D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) with c_skip = sd^2/(s^2+sd^2),
  c_out = s sd / sqrt(s^2+sd^2), c_in = 1/sqrt(s^2+sd^2) (Table 1, "ours"); c_noise = 250 ln(sigma)
  (EDM's ln(sigma)/4 rescaled by 1000 so positional embeddings see the same range as DDPM steps).
- `VPPrecond`: the DDPM parameterisation (Ho et al. 2020) used in arXiv 2505.17638: 1,000-step
  linear beta schedule, epsilon prediction. With alpha_bar_t, the VP state x_t = sqrt(ab) x0 +
  sqrt(1-ab) eps equals x / sqrt(1 + sigma^2) for sigma = sqrt((1-ab)/ab); so c_in = 1/sqrt(1+s^2),
  F predicts eps, c_skip = 1, c_out = -sigma, and c_noise is the (continuous) timestep index.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

C_NOISE_SCALE = 250.0  # EDM's c_noise = ln(sigma)/4, times 1000 (see above)


def precondition(precond: nn.Module, net: Callable, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """D(x; sigma) = c_skip x + c_out net(c_in x, c_noise), with `precond`'s coefficients.

    sigma has the leading shape of x ([B] for one model, [k, B] for a stack of k models, whose
    `net` then takes [k, B, ...]); the coefficients broadcast over the remaining data dimensions.
    Every denoiser, single or stacked, goes through this one function.
    """
    c_skip, c_out, c_in, c_noise = precond.coefficients(sigma.to(x.dtype))
    tail = (1,) * (x.ndim - sigma.ndim)
    out = c_out.reshape(*c_out.shape, *tail) * net(c_in.reshape(*c_in.shape, *tail) * x, c_noise)
    return out + x if c_skip is None else c_skip.reshape(*c_skip.shape, *tail) * x + out


class EDMPrecond(nn.Module):
    def __init__(self, net: nn.Module, *, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in, c_noise), elementwise in sigma (any shape, the data's dtype)."""
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        return c_skip, c_out, c_in, C_NOISE_SCALE * sigma.log()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # [B, ...], [B]
        return precondition(self, self.net, x, sigma)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """lambda(sigma) = (s^2 + sd^2) / (s sd)^2, which gives unit loss scale at every sigma (Eq. 8)."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2


def vp_sigma_schedule(*, beta_min: float = 1e-4, beta_max: float = 0.02, num_timesteps: int = 1000) -> torch.Tensor:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) of the linear-beta DDPM schedule, increasing in t."""
    betas = torch.linspace(beta_min, beta_max, num_timesteps, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, dim=0)
    return ((1 - alpha_bar) / alpha_bar).sqrt()


class VPPrecond(nn.Module):
    def __init__(self, net: nn.Module, *, beta_min: float = 1e-4, beta_max: float = 0.02, num_timesteps: int = 1000):
        super().__init__()
        self.net = net
        # kept for timestep lookup and sampling
        sigmas = vp_sigma_schedule(beta_min=beta_min, beta_max=beta_max, num_timesteps=num_timesteps)
        self.register_buffer("sigmas", sigmas, persistent=False)
        self.register_buffer("log_sigmas", sigmas.log(), persistent=False)  # sigma_to_t's grid, once
        self.num_timesteps = num_timesteps

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous timestep index for sigma, by linear interpolation of log sigma_t."""
        log_s = self.log_sigmas.to(sigma.device)
        ls = sigma.double().log().clamp(log_s[0], log_s[-1])
        idx = torch.searchsorted(log_s, ls).clamp(1, self.num_timesteps - 1)
        lo, hi = log_s[idx - 1], log_s[idx]
        return (idx - 1 + (ls - lo) / (hi - lo)).to(sigma.dtype)

    def coefficients(self, sigma: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in, c_noise) elementwise in sigma; c_skip is None, meaning 1 (x passes through)."""
        return None, -sigma, 1 / (1 + sigma**2).sqrt(), self.sigma_to_t(sigma.reshape(-1)).reshape(sigma.shape)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return precondition(self, self.net, x, sigma)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """1/sigma^2 turns ||x0_hat - x0||^2 into the DDPM epsilon loss ||eps_hat - eps||^2."""
        return 1 / sigma**2
