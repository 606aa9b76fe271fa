"""Deterministic samplers over the probability-flow ODE, and per-sample initial noise.

Samplers are plain functions `sampler(denoiser, latents, *, num_steps, ...) -> x` where `latents`
are standard normal and every sample's trajectory is independent of the batch it runs in.
- `heun_sampler`: EDM's 2nd-order Heun method on dx/dsigma = (x - D(x; sigma)) / sigma with the
  Karras et al. 2022 schedule (Eq. 5; Algorithm 1 without churn). A denoiser with a `heun_steps(x, sigmas)`
  takes these steps itself in one call, with the same operations (models/mlp_native.py's NativeDenoiser).
- `ddim_sampler`: deterministic DDIM (Song et al. 2021, eta = 0) on the DDPM timesteps; in the VE
  variable x = x_t / sqrt(alpha_bar_t) one DDIM step is exactly an Euler step in sigma.
- `euler_maruyama_sampler`: the reverse-time SDE (Song et al. 2021, Eq. 6, in the variance-exploding
  variable, dx = -d[sigma^2] score dt + sqrt(d[sigma^2]/dt) dw) by Euler-Maruyama, as in the synthetic
  experiment of arXiv 2505.17638 (1,000 steps there); stochastic, with per-sample noise streams.
`per_sample_latents` gives sample i the same noise whatever the batch size, checkpoint, n or seed;
`per_sample_generators` does the same for the SDE's noise along the trajectory.

Run: samplers are called by `diffmem sample` (sample.py), chosen by `sample.sampler`.
"""

from __future__ import annotations

import numpy as np
import torch


def per_sample_latents(num: int, shape: tuple[int, ...], *, base_seed: int, start: int = 0) -> torch.Tensor:
    """[num, *shape] standard normals; row i is drawn from its own generator seeded by (base_seed, start+i)."""
    out = torch.empty((num, *shape))
    for i in range(num):
        seed = _sample_seed(base_seed, start + i)
        out[i] = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return out


def _sample_seed(*key: int) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def per_sample_generators(num: int, *, base_seed: int, start: int = 0, stream: int = 1) -> list[torch.Generator]:
    """One CPU generator per sample, seeded by (base_seed, start+i, stream): independent of the latents'."""
    return [torch.Generator().manual_seed(_sample_seed(base_seed, start + i, stream)) for i in range(num)]


def karras_sigmas(num_steps: int, *, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """Karras et al. 2022 Eq. 5 noise levels, decreasing, with a final 0 appended."""
    i = torch.arange(num_steps, dtype=torch.float64)
    s = (sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def heun_sampler(denoiser, latents: torch.Tensor, *, num_steps: int = 18, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    sigmas = karras_sigmas(num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho).to(latents.device)
    x = latents.to(torch.float64) * sigmas[0]
    steps = getattr(denoiser, "heun_steps", None)
    if steps is not None:  # the denoiser takes the steps below itself, in one call (models/mlp_native.py)
        return steps(x, sigmas).float()
    ones = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)

    def d_dsigma(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return (x - denoiser(x.float(), (s * ones).float()).double()) / s

    for s_cur, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = d_dsigma(x, s_cur)
        x_next = x + (s_next - s_cur) * d
        if s_next > 0:
            x_next = x + (s_next - s_cur) * 0.5 * (d + d_dsigma(x_next, s_next))
        x = x_next
    return x.float()


def ddim_sigmas(vp_sigmas: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Evenly spaced DDPM timesteps from T-1 down to 0, as VE sigmas, with a final 0 appended."""
    t = torch.linspace(vp_sigmas.shape[0] - 1, 0, num_steps).round().long()
    return torch.cat([vp_sigmas.double()[t], torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def ddim_sampler(denoiser, latents: torch.Tensor, *, num_steps: int = 100, vp_sigmas: torch.Tensor) -> torch.Tensor:
    sigmas = ddim_sigmas(vp_sigmas, num_steps).to(latents.device)
    # x_T ~ N(0, I) in the VP variable is x = x_T * sqrt(1 + sigma_T^2) in the VE variable
    x = latents.to(torch.float64) * (1 + sigmas[0] ** 2).sqrt()
    ones = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
    for s_cur, s_next in zip(sigmas[:-1], sigmas[1:]):
        x0_hat = denoiser(x.float(), (s_cur * ones).float()).double()
        x = x0_hat + (s_next / s_cur) * (x - x0_hat)
    return x.float()


@torch.no_grad()
def euler_maruyama_sampler(denoiser, latents: torch.Tensor, *, sigmas: torch.Tensor, generators: list[torch.Generator],
                           init_std: float | None = None) -> torch.Tensor:
    """Reverse-SDE Euler-Maruyama on a decreasing noise grid `sigmas` that ends with 0.

    In x = x0 + sigma z the score is (D(x; sigma) - x) / sigma^2, and one step from sigma to sigma'
    is x' = x + (sigma^2 - sigma'^2) score + sqrt(sigma^2 - sigma'^2) xi (Song et al. 2021's reverse
    diffusion for the VE SDE). The last step, to sigma' = 0, adds no noise: it returns D(x; sigma_last).
    `generators[i]` draws sample i's xi at every step, so a sample's path does not depend on its batch.
    x starts at latents * init_std (default sigmas[0])."""
    if len(generators) != latents.shape[0]:
        raise ValueError(f"one generator per sample: got {len(generators)} for {latents.shape[0]} latents")
    sigmas = sigmas.to(torch.float64)
    x = latents.to(torch.float64) * (float(sigmas[0]) if init_std is None else init_std)
    ones = torch.ones(x.shape[0], dtype=torch.float64, device=x.device)
    shape = tuple(latents.shape[1:])
    # each generator draws a block of steps at once (one call per sample per block); the block length
    # depends on the data size only, so a sample's noise does not depend on the batch it runs in
    block = max(1, min(64, 2**14 // max(1, int(np.prod(shape)))))
    noise = None
    for k, (s_cur, s_next) in enumerate(zip(sigmas[:-1].tolist(), sigmas[1:].tolist())):
        x0_hat = denoiser(x.float(), (s_cur * ones).float()).double()
        var = s_cur**2 - s_next**2  # noise variance the step removes
        x = x + (var / s_cur**2) * (x0_hat - x)
        if s_next > 0:
            if k % block == 0:
                noise = torch.stack([torch.randn((block, *shape), generator=g) for g in generators]).to(x.device)
            x = x + var**0.5 * noise[:, k % block].double()
    return x.float()
