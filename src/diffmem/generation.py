"""Drawing samples from a denoiser: per-sample seeded latents through the configured sampler.

`generate` runs one denoiser, `generate_stack` k denoisers of one architecture evaluated together
(every one gets the same latents and noise streams as alone); `denoiser_from_checkpoint` rebuilds a
trained denoiser; `sampling_kernel` says what evaluates a trained network (`sample.kernel`: torch's
kernels, or diffmem's C kernel for the default MLP, models/mlp_native.py); `sample_cache_dir` is where
a run's samples are cached, keyed by the sampler settings and that kernel. The sampling stages
(`diffmem.stages.sample`, `.closed_form`) and the quality stage call these.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

from diffmem import native
from diffmem.checkpoint import DATA_OFFSET
from diffmem.config import ModelConfig, SampleConfig, stable_hash
from diffmem.io import atomic_write_text
from diffmem.models import build_denoiser, mlp_native
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


def denoiser_from_checkpoint(ckpt: dict, *, use_ema: bool, device: torch.device,
                             into: torch.nn.Module | None = None) -> torch.nn.Module:
    """The checkpoint's denoiser in data coordinates (a ShiftedDenoiser when the run trained centred).

    `into`: a denoiser this function made from another checkpoint of the same run, which takes this
    checkpoint's weights (and offset) in place and is returned: the same numbers without building a
    network, whose initial weights loading would replace (~6 ms for the digits MLP, a run's sampling
    builds one per checkpoint)."""
    cfg = ckpt["config"]
    weights = ckpt["ema"] if (use_ema and ckpt.get("ema") is not None) else ckpt["model"]
    if into is not None:
        shifted = isinstance(into, ShiftedDenoiser)
        if shifted != (ckpt.get(DATA_OFFSET) is not None):
            raise ValueError("denoiser_from_checkpoint: `into` is a denoiser of another run (centred or not)")
        (into.inner if shifted else into).load_state_dict(weights)
        if shifted:
            into.offset.copy_(torch.as_tensor(ckpt[DATA_OFFSET], dtype=torch.float32))
        return into
    model_cfg = ModelConfig.from_dict(cfg["model"])
    denoiser = build_denoiser(model_cfg, data_shape=tuple(cfg["data_shape"]))
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


def native_refusal(denoiser: torch.nn.Module, *, device: torch.device) -> str | None:
    """Why diffmem's C kernel cannot evaluate `denoiser`'s network here, or None where it can."""
    base = denoiser.inner if isinstance(denoiser, ShiftedDenoiser) else denoiser
    if torch.device(device).type != "cpu":
        return f"it samples on {device}, and the native kernel runs on the CPU"
    if not mlp_native.supports(base):
        return "the network is not the default MLP (arch mlp)"
    if any(p.dtype != torch.float32 for p in base.parameters()):
        return "the network's weights are not float32"
    return native.available()


def sampling_kernel(setting: str, denoiser: torch.nn.Module, *, device: torch.device) -> str:
    """What evaluates a trained network, "native" or "torch", for `sample.kernel` (auto, torch or native):
    auto is native where `native_refusal` has no reason, else torch; native where it cannot run is a ValueError."""
    if setting not in ("auto", "torch", "native"):
        raise ValueError(f"sample.kernel must be auto, torch or native; got {setting!r}")
    if setting == "torch":
        return "torch"
    why = native_refusal(denoiser, device=device)
    if why is not None and setting == "native":
        raise ValueError(f"sample.kernel: native cannot sample this run: {why}; set sample.kernel to auto or torch")
    return "torch" if why else "native"


class MemberBlocks:
    """k denoisers as one `denoiser(x, sigma)` over k blocks of rows, each block evaluated by its own (the
    native kernel's stacked checkpoints: each is computed as alone, bit for bit)."""

    def __init__(self, denoisers: list) -> None:
        self.denoisers = denoisers
        if hasattr(denoisers[0], "sigmas"):  # DDPM: the samplers read the timestep schedule
            self.sigmas = denoisers[0].sigmas

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0] // len(self.denoisers)
        return torch.cat([d(x[m * rows:(m + 1) * rows], sigma[m * rows:(m + 1) * rows])
                          for m, d in enumerate(self.denoisers)])


@functools.lru_cache(maxsize=16)
def _shared_latents(num: int, data_shape: tuple[int, ...], *, base_seed: int, start: int) -> torch.Tensor:
    """`per_sample_latents`, drawn once per process: every checkpoint of a run (and every closed-form model)
    starts from the same latents, and drawing them, one generator per sample, is ~10 % of sampling a
    checkpoint of the default MLP on the CPU. Callers must not write into the tensor (it is shared).
    16 batches are kept: a sampling job cycles through num_samples / batch_size of them per checkpoint."""
    return per_sample_latents(num, data_shape, base_seed=base_seed, start=start)


def generate(denoiser: torch.nn.Module, cfg: SampleConfig, *, data_shape: tuple[int, ...],
             device: torch.device, kernel: str = "torch") -> np.ndarray:
    """[num_samples, D] samples from per-sample seeded noise, in batches of cfg.batch_size."""
    return generate_stack([denoiser], cfg, data_shape=data_shape, device=device, kernel=kernel)[0]


def generate_stack(denoisers: list[torch.nn.Module], cfg: SampleConfig, *, data_shape: tuple[int, ...],
                   device: torch.device, kernel: str = "torch") -> list[np.ndarray]:
    """generate() for each of k denoisers, evaluated together; one [num_samples, D] array per denoiser.

    Each denoiser's samples start from the same per-sample latents (and Euler-Maruyama noise
    streams) as generate() gives it alone; a batch holds cfg.batch_size rows over all k. `kernel`
    ("torch" or "native", `sampling_kernel`'s answer) says what evaluates the networks.
    """
    k = len(denoisers)
    # centred runs: sample with the centred networks, then add each one's offset (ShiftedDenoiser)
    offsets = [d.offset.reshape(1, -1).cpu().numpy() if isinstance(d, ShiftedDenoiser) else None for d in denoisers]
    denoisers = [d.inner if isinstance(d, ShiftedDenoiser) else d for d in denoisers]
    if kernel == "native":
        denoisers = [mlp_native.NativeDenoiser(d) for d in denoisers]
        denoiser = denoisers[0] if k == 1 else MemberBlocks(denoisers)
    elif kernel == "torch":
        denoiser = denoisers[0] if k == 1 else CheckpointStack(denoisers)
    else:
        raise ValueError(f"kernel must be torch or native; got {kernel!r}")
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


def _sampling_settings(cfg: SampleConfig, kernel: str) -> dict:
    """The settings that make a cache's samples: the run settings left out, the kernel as used (not auto)."""
    if kernel not in ("torch", "native"):
        raise ValueError(f"kernel must be torch or native; got {kernel!r}")
    return {k: v for k, v in cfg.__dict__.items() if k not in ("batch_size", "stack_checkpoints")} | {"kernel": kernel}


def sample_cache_dir(run_dir: str | Path, cfg: SampleConfig, *, source: str, kernel: str = "torch") -> Path:
    """Where a run's samples are cached: <run_dir>/samples/<source>-<sampling key>/ (one .npy per step).

    `source` names what was sampled (a trained run's trajectory hash, a closed-form model's key), so a
    retrained run never reuses another trajectory's samples; `kernel` is what evaluated the network
    (`sampling_kernel`'s answer for cfg.kernel), so samples of the native kernel never pass for torch's."""
    # sampler "auto" and kernel "torch" are what every cache before those options held: the key leaves
    # them out; the run settings (batch_size, stack_checkpoints) do not change the samples beyond float rounding
    key = {k: v for k, v in _sampling_settings(cfg, kernel).items()
           if not (k == "sampler" and v == "auto") and not (k == "kernel" and v == "torch")}
    return Path(run_dir) / "samples" / f"{source}-{stable_hash(key)}"


def open_sample_cache(run_dir: str | Path, cfg: SampleConfig, *, source: str, kernel: str = "torch") -> Path:
    """`sample_cache_dir`, created, with `about.json` saying what its .npy files hold (once)."""
    cache = sample_cache_dir(run_dir, cfg, source=source, kernel=kernel)
    cache.mkdir(parents=True, exist_ok=True)
    about = cache / "about.json"
    if not about.exists():
        settings = _sampling_settings(cfg, kernel)
        atomic_write_text(about, json.dumps({"samples_of": source, "sampling": settings,
                                             "files": "step<9 digits>.npy: num_samples x data dimension, float32"}, indent=1))
    return cache
