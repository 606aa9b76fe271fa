"""Sampling stage: generate `num_samples` samples at every checkpoint of one (n, seed) run.

The sampler is `sample.sampler`: auto (Heun for edm, DDIM for ddpm) or euler_maruyama (the reverse
SDE, stochastic). Samples are cached in the run's folder (runs/<run>/samples/<trajectory>-<key>/),
keyed by the trajectory and the sampler settings, so raising `max_steps` samples only the new
checkpoints. The declared output is a JSON manifest listing one .npy file of shape [num_samples, D] per step.

`sample.stack_checkpoints: k` samples k checkpoints at once as one stacked denoiser (the training
engine's models/stacked.py): every checkpoint gets the same per-sample latents and noise streams
as alone, and its samples equal the one-at-a-time ones to the float rounding of the batched
kernels. It pays where one checkpoint's network evaluations cannot fill the device (a GPU with a
small MLP); on CPU the default, 1, samples one checkpoint at a time with the module itself.

`sample.kernel` says what evaluates the network: auto (the default) samples the default MLP on CPU
with diffmem's C kernel (models/mlp_native.py's NativeDenoiser) where it builds, other networks and
devices with torch; its samples equal torch's to float rounding and are cached apart from them.

Several runs in one process (the workflow's grouped evaluation, `train.group_evaluation`): give
--train-metrics, --checkpoints and --out one entry per run; each run is sampled as alone.

Run: `diffmem sample --train-metrics train_metrics.nc [--checkpoints runs/<run>/checkpoints] --sample-cfg '<json>'
[--run-settings '<json>'] [--device cuda] --out samples.json`
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from diffmem import names
from diffmem.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, trajectory_of
from diffmem.config import ConfigError, SampleConfig, read_slice
from diffmem.generation import (
    denoiser_from_checkpoint,
    generate_stack,
    native_refusal,
    open_sample_cache,
    sampling_kernel,
)
from diffmem.gpus import select_device
from diffmem.io import atomic_write_text, fail, read_netcdf_raw
from diffmem.log import configure
from diffmem.stages import add_run_settings, one_per_run, stage_parser

log = logging.getLogger(__name__)


def _load(state_dir: Path, step: int, device) -> dict:
    try:
        return load_checkpoint(checkpoint_path(state_dir, step), map_location=device)
    except CheckpointError as exc:
        fail(str(exc))


def sample_run(train_metrics: str, checkpoints: str | None, out: str, *, cfg: SampleConfig, device) -> None:
    """Sample every checkpoint of one run that its cache lacks and write the run's manifest `out`."""
    # four values of train_metrics.nc: read without xarray, which this job would import for nothing else
    attrs, values = read_netcdf_raw(train_metrics, [names.STEP, names.N, names.SEED])
    state_dir = Path(checkpoints or attrs["checkpoint_dir"])
    trajectory = str(attrs["trajectory_hash"])
    steps = [int(s) for s in values[names.STEP]]
    n, seed = int(values[names.N]), int(values[names.SEED])
    if trajectory_of(state_dir) not in (None, trajectory):
        fail(f"{state_dir} holds checkpoints of trajectory {trajectory_of(state_dir)}, not {trajectory} of "
             f"{train_metrics}; retrain the run")
    # the run's network and where it samples decide the kernel, and with it the cache
    loaded = {steps[0]: _load(state_dir, steps[0], device)}
    built = [denoiser_from_checkpoint(loaded[steps[0]], use_ema=cfg.use_ema, device=device)]
    try:
        kernel = sampling_kernel(cfg.kernel, built[0], device=device)
    except ValueError as exc:
        fail(str(exc))
    if kernel == "torch" and cfg.kernel == "auto":
        log.info(f"n={n} seed={seed}: the native kernel does not sample this run "
                 f"({native_refusal(built[0], device=device)}); torch's kernels do")
    cache = open_sample_cache(Path(train_metrics).parent, cfg, source=trajectory[:12], kernel=kernel)
    log.debug(f"{cfg}; {kernel} kernel; samples cached in {cache}")
    done, t0 = 0, time.perf_counter()
    missing = [step for step in steps if not (cache / f"step{step:09d}.npy").exists()]
    for i in range(0, len(missing), cfg.stack_checkpoints):
        chunk = missing[i:i + cfg.stack_checkpoints]
        denoisers = []
        for j, step in enumerate(chunk):  # the last chunk's denoisers take this chunk's weights (none is built)
            ckpt = loaded.pop(step, None) or _load(state_dir, step, device)
            denoisers.append(denoiser_from_checkpoint(ckpt, use_ema=cfg.use_ema, device=device,
                                                      into=built[j] if j < len(built) else None))
        built = denoisers
        xs = generate_stack(denoisers, cfg, data_shape=tuple(ckpt["config"]["data_shape"]), device=device,
                            kernel=kernel)
        for step, x in zip(chunk, xs):
            path = cache / f"step{step:09d}.npy"
            if not np.all(np.isfinite(x)):
                log.warning(f"n={n} seed={seed}: non-finite samples at step {step}")
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, x.astype(np.float32))
            tmp.replace(path)
            done += 1
            log.info(f"n={n} seed={seed} step {step}: {cfg.num_samples} samples "
                     f"({cfg.num_samples * done / (time.perf_counter() - t0):,.0f} samples/s)")
    files = {str(step): str(cache / f"step{step:09d}.npy") for step in steps}
    log.info(f"n={n} seed={seed}: {done} checkpoints sampled ({kernel} kernel), {len(steps) - done} reused from {cache}")
    manifest = {"n": n, "seed": seed, "steps": steps, "files": files, "sample_config": cfg.__dict__, "kernel": kernel}
    atomic_write_text(out, json.dumps(manifest, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem sample", __doc__, "diffmem.stages.sample")
    parser.add_argument("--train-metrics", nargs="+", required=True,
                        help="train_metrics.nc of the run (several: one per run, sampled one after another)")
    parser.add_argument("--checkpoints", nargs="+", default=None,
                        help="the run's checkpoint folder (default: the one its train_metrics.nc names); one per run")
    parser.add_argument("--sample-cfg", required=True, help="sample config slice (JSON or path)")
    add_run_settings(parser)
    parser.add_argument("--device", default="auto", help="where to sample (the workflow passes train.device)")
    parser.add_argument("--out", nargs="+", required=True, help="samples.json manifest of each run")
    args = parser.parse_args(argv)
    runs = one_per_run("diffmem sample", train_metrics=args.train_metrics, checkpoints=args.checkpoints, out=args.out)
    try:
        cfg = SampleConfig.from_dict(read_slice("sample", args.sample_cfg, args.run_settings))
    except ConfigError as exc:
        fail(str(exc))
    try:
        device, _gpu_lease = select_device(args.device)  # the lease holds this job's GPU until exit
    except RuntimeError as exc:
        fail(str(exc))
    checkpoints = args.checkpoints or [None] * runs
    for train_metrics, folder, out in zip(args.train_metrics, checkpoints, args.out):
        sample_run(train_metrics, folder, out, cfg=cfg, device=device)


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
