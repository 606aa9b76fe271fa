"""Sampling stage: generate `num_samples` samples at every checkpoint of one (n, seed) run.

The sampler is `sample.sampler`: auto (Heun for edm, DDIM for ddpm) or euler_maruyama (the reverse
SDE, stochastic). Samples are cached next to the checkpoints, keyed by the sampler settings, so raising `max_steps`
samples only the new checkpoints. The declared output is a JSON manifest listing one .npy file of
shape [num_samples, D] per step.

`sample.stack_checkpoints: k` samples k checkpoints at once as one stacked denoiser (the training
engine's models/stacked.py): every checkpoint gets the same per-sample latents and noise streams
as alone, and its samples equal the one-at-a-time ones to the float rounding of the batched
kernels. It pays where one checkpoint's network evaluations cannot fill the device (a GPU with a
small MLP); on CPU the default, 1, samples one checkpoint at a time with the module itself.

Run: `diffmem sample --train-metrics train_metrics.nc --sample-cfg '<json>' --out samples.json`
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from diffmem import names
from diffmem.checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from diffmem.config import ConfigError, ModelConfig, SampleConfig, read_json_arg, stable_hash
from diffmem.gpus import select_device
from diffmem.io import NETCDF_ENGINE, atomic_write_text, fail
from diffmem.models import build_denoiser
from diffmem.models.stacked import StackedDenoiser, stack_modules
from diffmem.samplers import (ddim_sampler, ddim_sigmas, euler_maruyama_sampler, heun_sampler, karras_sigmas,
                              per_sample_generators, per_sample_latents)


def denoiser_from_checkpoint(ckpt: dict, *, use_ema: bool, device: torch.device) -> torch.nn.Module:
    cfg = ckpt["config"]
    model_cfg = ModelConfig.from_dict(cfg["model"])
    denoiser = build_denoiser(model_cfg, data_shape=tuple(cfg["data_shape"]))
    weights = ckpt["ema"] if (use_ema and ckpt.get("ema") is not None) else ckpt["model"]
    denoiser.load_state_dict(weights)
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
    denoiser = denoisers[0] if k == 1 else CheckpointStack(denoisers)
    per_batch = max(1, cfg.batch_size // k)
    out = []
    for start in range(0, cfg.num_samples, per_batch):
        num = min(per_batch, cfg.num_samples - start)
        z = per_sample_latents(num, data_shape, base_seed=cfg.noise_seed, start=start).to(device)
        z = z.repeat(k, *([1] * len(data_shape)))  # the same latents for every denoiser
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
    return list(np.concatenate(out, axis=1))


def sample_cache_dir(state_dir: str | Path, cfg: SampleConfig) -> Path:
    # sampler "auto" is what every cache before the option held: its key leaves it out; the run
    # settings (batch_size, stack_checkpoints) do not change the samples beyond float rounding
    key = {k: v for k, v in cfg.__dict__.items()
           if k not in ("batch_size", "stack_checkpoints") and not (k == "sampler" and v == "auto")}
    return Path(state_dir) / f"samples_{stable_hash(key)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="diffmem sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-metrics", required=True, help="train_metrics.nc of the run")
    parser.add_argument("--sample-cfg", required=True, help="sample config slice (JSON or path)")
    parser.add_argument("--device", default=None, help="default: the slice's device key, else auto")
    parser.add_argument("--out", required=True, help="samples.json manifest")
    args = parser.parse_args(argv)
    try:
        values = read_json_arg(args.sample_cfg)
        device_name = args.device or values.pop("device", None) or "auto"  # the workflow passes train.device
        values.pop("device", None)
        cfg = SampleConfig.from_dict(values)
    except ConfigError as exc:
        fail(str(exc))
    try:
        device, _gpu_lease = select_device(device_name)  # the lease holds this job's GPU until exit
    except RuntimeError as exc:
        fail(str(exc))
    with xr.open_dataset(args.train_metrics, engine=NETCDF_ENGINE) as tm:
        state_dir = Path(tm.attrs["state_dir"])
        steps = [int(s) for s in tm[names.STEP].values]
        n, seed = int(tm[names.N]), int(tm[names.SEED])
    cache = sample_cache_dir(state_dir, cfg)
    cache.mkdir(parents=True, exist_ok=True)
    files, done, t0 = {}, 0, time.perf_counter()
    missing = [step for step in steps if not (cache / f"step{step:09d}.npy").exists()]
    for i in range(0, len(missing), cfg.stack_checkpoints):
        chunk = missing[i:i + cfg.stack_checkpoints]
        denoisers = []
        for step in chunk:
            try:
                ckpt = load_checkpoint(checkpoint_path(state_dir, step), map_location=device)
            except CheckpointError as exc:
                fail(str(exc))
            denoisers.append(denoiser_from_checkpoint(ckpt, use_ema=cfg.use_ema, device=device))
        xs = generate_stack(denoisers, cfg, data_shape=tuple(ckpt["config"]["data_shape"]), device=device)
        for step, x in zip(chunk, xs):
            path = cache / f"step{step:09d}.npy"
            if not np.all(np.isfinite(x)):
                print(f"[sample] warning: non-finite samples at step {step}", flush=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, x.astype(np.float32))
            tmp.replace(path)
            done += 1
            print(f"[sample] n={n} seed={seed} step {step}: {cfg.num_samples} samples "
                  f"({cfg.num_samples * done / (time.perf_counter() - t0):,.0f} samples/s)", flush=True)
    files = {str(step): str(cache / f"step{step:09d}.npy") for step in steps}
    print(f"[sample] {done} checkpoints sampled, {len(steps) - done} reused from {cache}", flush=True)
    manifest = {"n": n, "seed": seed, "steps": steps, "files": files, "sample_config": cfg.__dict__}
    atomic_write_text(args.out, json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
