"""Sampling stage: generate `num_samples` samples at every checkpoint of one (n, seed) run.

The sampler is `sample.sampler`: auto (Heun for edm, DDIM for ddpm) or euler_maruyama (the reverse
SDE, stochastic). Samples are cached next to the checkpoints, keyed by the sampler settings, so raising `max_steps`
samples only the new checkpoints. The declared output is a JSON manifest listing one .npy file of
shape [num_samples, D] per step.

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
from diffmem.samplers import (ddim_sampler, ddim_sigmas, euler_maruyama_sampler, heun_sampler, karras_sigmas,
                              per_sample_generators, per_sample_latents)


def denoiser_from_checkpoint(ckpt: dict, *, use_ema: bool, device: torch.device) -> torch.nn.Module:
    cfg = ckpt["config"]
    model_cfg = ModelConfig.from_dict(cfg["model"])
    denoiser = build_denoiser(model_cfg, data_shape=tuple(cfg["data_shape"]))
    weights = ckpt["ema"] if (use_ema and ckpt.get("ema") is not None) else ckpt["model"]
    denoiser.load_state_dict(weights)
    return denoiser.to(device).eval()


def generate(denoiser: torch.nn.Module, cfg: SampleConfig, *, data_shape: tuple[int, ...],
             device: torch.device) -> np.ndarray:
    """[num_samples, D] samples from per-sample seeded noise, in batches of cfg.batch_size."""
    out = []
    for start in range(0, cfg.num_samples, cfg.batch_size):
        num = min(cfg.batch_size, cfg.num_samples - start)
        z = per_sample_latents(num, data_shape, base_seed=cfg.noise_seed, start=start).to(device)
        if cfg.sampler == "euler_maruyama":
            if hasattr(denoiser, "sigmas"):  # DDPM: its own timesteps; x_T ~ N(0, I) in the VP variable
                sigmas = ddim_sigmas(denoiser.sigmas, cfg.num_steps)
                init_std = float((1 + sigmas[0] ** 2).sqrt())
            else:
                sigmas = karras_sigmas(cfg.num_steps, sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, rho=cfg.rho)
                init_std = None
            gens = per_sample_generators(num, base_seed=cfg.noise_seed, start=start)
            x = euler_maruyama_sampler(denoiser, z, sigmas=sigmas.to(device), generators=gens, init_std=init_std)
        elif hasattr(denoiser, "sigmas"):  # DDPM parameterisation
            x = ddim_sampler(denoiser, z, num_steps=cfg.num_steps, vp_sigmas=denoiser.sigmas)
        else:
            x = heun_sampler(denoiser, z, num_steps=cfg.num_steps, sigma_min=cfg.sigma_min,
                             sigma_max=cfg.sigma_max, rho=cfg.rho)
        out.append(x.reshape(num, -1).cpu().numpy())
    return np.concatenate(out)


def sample_cache_dir(state_dir: str | Path, cfg: SampleConfig) -> Path:
    # sampler "auto" is what every cache before the option held: its key leaves it out
    key = {k: v for k, v in cfg.__dict__.items() if k != "batch_size" and not (k == "sampler" and v == "auto")}
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
    for step in steps:
        path = cache / f"step{step:09d}.npy"
        if not path.exists():
            try:
                ckpt = load_checkpoint(checkpoint_path(state_dir, step), map_location=device)
            except CheckpointError as exc:
                fail(str(exc))
            denoiser = denoiser_from_checkpoint(ckpt, use_ema=cfg.use_ema, device=device)
            x = generate(denoiser, cfg, data_shape=tuple(ckpt["config"]["data_shape"]), device=device)
            if not np.all(np.isfinite(x)):
                print(f"[sample] warning: non-finite samples at step {step}", flush=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, x.astype(np.float32))
            tmp.replace(path)
            done += 1
            print(f"[sample] n={n} seed={seed} step {step}: {cfg.num_samples} samples "
                  f"({cfg.num_samples * done / (time.perf_counter() - t0):,.0f} samples/s)", flush=True)
        files[str(step)] = str(path)
    print(f"[sample] {done} checkpoints sampled, {len(steps) - done} reused from {cache}", flush=True)
    manifest = {"n": n, "seed": seed, "steps": steps, "files": files, "sample_config": cfg.__dict__}
    atomic_write_text(args.out, json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
