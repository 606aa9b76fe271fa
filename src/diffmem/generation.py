"""Drawing samples from a denoiser: per-sample seeded latents through the configured sampler.

`generate` runs one denoiser, `generate_stack` k denoisers of one architecture evaluated together
(every one gets the same latents and noise streams as alone); `denoiser_from_checkpoint` rebuilds a
trained denoiser; `sample_cache_dir` is where a run's samples are cached, keyed by the sampler
settings. The sampling stages (`diffmem.stages.sample`, `.closed_form`) and the quality stage call these.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

from diffmem.checkpoint import DATA_OFFSET
from diffmem.config import ModelConfig, SampleConfig, stable_hash
from diffmem.io import atomic_write_text
from diffmem.models import build_denoiser
from diffmem.models.stacked import StackedDenoiser, stack_modules
from diffmem.samplers import (
    ddim_sampler,
    ddim_sigmas,
    euler_maruyama_sampler,
    heun_sampler,
    karras_sigmas,
    per_sample_generators,
    per_sample_latents,
)


class ShiftedDenoiser(torch.nn.Module):
    """A denoiser trained on centred data (train.center), in data coordinates: D(x, sigma) = m + D_c(x - m, sigma).

    In the samplers' variable x = x0 + sigma * noise the shift is exact at every noise level. The
    samplers run the inner, centred denoiser and add `offset` to its samples (`generate_stack`), which is
    the authors' procedure (sample in centred coordinates, then undo the centring); the wrapper is what
    evaluates the denoiser on data-space inputs (the exact-quality metrics).
    """

    def __init__(self, inner: torch.nn.Module, offset: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("offset", offset.detach().clone())
        if hasattr(inner, "sigmas"):  # DDPM: the samplers read the timestep schedule
            self.sigmas = inner.sigmas

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.offset + self.inner(x - self.offset, sigma)


def denoiser_from_checkpoint(ckpt: dict, *, use_ema: bool, device: torch.device) -> torch.nn.Module:
    """The checkpoint's denoiser in data coordinates (a ShiftedDenoiser when the run trained centred)."""
    cfg = ckpt["config"]
    model_cfg = ModelConfig.from_dict(cfg["model"])
    denoiser = build_denoiser(model_cfg, data_shape=tuple(cfg["data_shape"]))
    weights = ckpt["ema"] if (use_ema and ckpt.get("ema") is not None) else ckpt["model"]
    denoiser.load_state_dict(weights)
    if ckpt.get(DATA_OFFSET) is not None:
        denoiser = ShiftedDenoiser(denoiser, torch.as_tensor(ckpt[DATA_OFFSET], dtype=torch.float32))
    return denoiser.to(device).eval()


class CheckpointStack:
    """k denoisers of one architecture as one `denoiser(x, sigma)` over k blocks of rows.

    Rows [m B, (m + 1) B) of x [k B, ...] go to denoiser m, so the samplers run unchanged on the
    k copies of a batch; one stacked evaluation replaces k module calls.
    """

    def __init__(self, denoisers: list[torch.nn.Module]) -> None:
        params, buffers = stack_modules(denoisers)
        self.k = len(denoisers)
        self.stacked = StackedDenoiser(denoisers[0], {n: t.detach() for n, t in params.items()}, buffers)
        if hasattr(denoisers[0], "sigmas"):  # DDPM: the samplers read the timestep schedule
            self.sigmas = denoisers[0].sigmas

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0] // self.k
        out = self.stacked(x.reshape(self.k, rows, *x.shape[1:]), sigma.reshape(self.k, rows))
        return out.reshape(x.shape)


@functools.lru_cache(maxsize=16)
def _shared_latents(num: int, data_shape: tuple[int, ...], *, base_seed: int, start: int) -> torch.Tensor:
    """`per_sample_latents`, drawn once per process: every checkpoint of a run (and every closed-form model)
    starts from the same latents, and drawing them, one generator per sample, is ~10 % of sampling a
    checkpoint of the default MLP on the CPU. Callers must not write into the tensor (it is shared).
    16 batches are kept: a sampling job cycles through num_samples / batch_size of them per checkpoint."""
    return per_sample_latents(num, data_shape, base_seed=base_seed, start=start)


def generate(denoiser: torch.nn.Module, cfg: SampleConfig, *, data_shape: tuple[int, ...],
             device: torch.device) -> np.ndarray:
    """[num_samples, D] samples from per-sample seeded noise, in batches of cfg.batch_size."""
    return generate_stack([denoiser], cfg, data_shape=data_shape, device=device)[0]


def generate_stack(denoisers: list[torch.nn.Module], cfg: SampleConfig, *, data_shape: tuple[int, ...],
                   device: torch.device) -> list[np.ndarray]:
    """generate() for each of k denoisers, evaluated together; one [num_samples, D] array per denoiser.

    Each denoiser's samples start from the same per-sample latents (and Euler-Maruyama noise
    streams) as generate() gives it alone; a batch holds cfg.batch_size rows over all k.
    """
    k = len(denoisers)
    # centred runs: sample with the centred networks, then add each one's offset (ShiftedDenoiser)
    offsets = [d.offset.reshape(1, -1).cpu().numpy() if isinstance(d, ShiftedDenoiser) else None for d in denoisers]
    denoisers = [d.inner if isinstance(d, ShiftedDenoiser) else d for d in denoisers]
    denoiser = denoisers[0] if k == 1 else CheckpointStack(denoisers)
    per_batch = max(1, cfg.batch_size // k)
    out = []
    for start in range(0, cfg.num_samples, per_batch):
        num = min(per_batch, cfg.num_samples - start)
        z = _shared_latents(num, tuple(data_shape), base_seed=cfg.noise_seed, start=start)
        z = z.to(device).repeat(k, *([1] * len(data_shape)))  # the same latents for every denoiser (a copy)
        if cfg.sampler == "euler_maruyama":
            if hasattr(denoiser, "sigmas"):  # DDPM: its own timesteps; x_T ~ N(0, I) in the VP variable
                sigmas = ddim_sigmas(denoiser.sigmas, cfg.num_steps)
                init_std = float((1 + sigmas[0] ** 2).sqrt())
            else:
                sigmas = karras_sigmas(cfg.num_steps, sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, rho=cfg.rho)
                init_std = None
            gens = [g for _ in range(k) for g in per_sample_generators(num, base_seed=cfg.noise_seed, start=start)]
            x = euler_maruyama_sampler(denoiser, z, sigmas=sigmas.to(device), generators=gens, init_std=init_std)
        elif hasattr(denoiser, "sigmas"):  # DDPM parameterisation
            x = ddim_sampler(denoiser, z, num_steps=cfg.num_steps, vp_sigmas=denoiser.sigmas)
        else:
            x = heun_sampler(denoiser, z, num_steps=cfg.num_steps, sigma_min=cfg.sigma_min,
                             sigma_max=cfg.sigma_max, rho=cfg.rho)
        out.append(x.reshape(k, num, -1).cpu().numpy())
    samples = list(np.concatenate(out, axis=1))
    return [x if o is None else x + o for x, o in zip(samples, offsets)]


def sample_cache_dir(run_dir: str | Path, cfg: SampleConfig, *, source: str) -> Path:
    """Where a run's samples are cached: <run_dir>/samples/<source>-<sampling key>/ (one .npy per step).

    `source` names what was sampled (a trained run's trajectory hash, a closed-form model's key), so a
    retrained run never reuses another trajectory's samples."""
    # sampler "auto" is what every cache before the option held: its key leaves it out; the run
    # settings (batch_size, stack_checkpoints) do not change the samples beyond float rounding
    key = {k: v for k, v in cfg.__dict__.items()
           if k not in ("batch_size", "stack_checkpoints") and not (k == "sampler" and v == "auto")}
    return Path(run_dir) / "samples" / f"{source}-{stable_hash(key)}"


def open_sample_cache(run_dir: str | Path, cfg: SampleConfig, *, source: str) -> Path:
    """`sample_cache_dir`, created, with `about.json` saying what its .npy files hold (once)."""
    cache = sample_cache_dir(run_dir, cfg, source=source)
    cache.mkdir(parents=True, exist_ok=True)
    about = cache / "about.json"
    if not about.exists():
        settings = {k: v for k, v in cfg.__dict__.items() if k not in ("batch_size", "stack_checkpoints")}
        atomic_write_text(about, json.dumps({"samples_of": source, "sampling": settings,
                                             "files": "step<9 digits>.npy: num_samples x data dimension, float32"}, indent=1))
    return cache
