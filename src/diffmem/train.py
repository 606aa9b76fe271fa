"""Training stage: fit a denoiser to one training subset, checkpointing on a step grid.

Every checkpoint step writes a self-contained file (see checkpoint.py) and records the training
and held-out losses on a fixed probe of (x, sigma, noise) triples, identical across steps, n and
seeds, so values are comparable. Training resumes exactly from the latest usable checkpoint: the
batch order, noise draws and optimizer state continue as if never interrupted.

Grid steps are log-spaced, so on long runs they are far apart. In between, the state is also saved
to `resume.pt` in the state folder every `train.resume_every_min` minutes, and at once when the job
gets SIGTERM or SIGUSR1 (what SLURM sends before its time limit or on preemption): the run then
stops after the current step with exit status 128 + signal number and writes no train_metrics.nc.
Rerunning the same command continues from `resume.pt` when it is later than the last grid
checkpoint; it is deleted once the grid is complete.

Run: `diffmem train --train train.npz --dataset dataset.npz --model '<json>' --train-cfg '<json>'
--seed 0 --state-root results/exp/state/n64_seed0 --out results/exp/runs/n64_seed0/train_metrics.nc`
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import xarray as xr

from diffmem import names
from diffmem.checkpoint import (
    CheckpointError,
    checkpoint_path,
    existing_steps,
    load_checkpoint,
    load_resume,
    remove_resume,
    resume_path,
    save_checkpoint,
    save_resume,
)
from diffmem.config import (
    ConfigError,
    ModelConfig,
    TrainConfig,
    checkpoint_grid,
    family_model,
    read_json_arg,
    stable_hash,
)
from diffmem.data import load_dataset, load_train
from diffmem.gpus import select_device
from diffmem.io import atomic_to_netcdf, fail
from diffmem.loss import denoising_loss, sample_sigma
from diffmem.models import build_denoiser
from diffmem.models.precond import vp_sigma_schedule

PROBE_SEED = 20250523  # one probe for every n, seed and step
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # what SLURM sends before a time limit or a preemption


class TrainingDiverged(RuntimeError):
    pass


class TrainingInterrupted(RuntimeError):
    """Training stopped on a signal after saving its state to resume.pt; rerunning continues it."""

    def __init__(self, message: str, *, signum: int, step: int) -> None:
        super().__init__(message)
        self.signum, self.step = signum, step


class ResumeTrigger:
    """When to write resume.pt: `every_min` minutes after the last save (or the start), or after a stop signal.

    `due()` is cheap enough to ask after every step (one monotonic clock read). The signal handlers
    only record the signal; the training loop saves and stops after the next step it completes that
    is not a grid step (a grid step writes its checkpoint, then trains one more step).
    """

    def __init__(self, every_min: float) -> None:
        self.every_s = 60.0 * every_min
        self.signum: int | None = None
        self.last = time.monotonic()

    def request_stop(self, signum: int, frame: object = None) -> None:
        self.signum = signum

    def due(self) -> bool:
        return self.signum is not None or time.monotonic() - self.last >= self.every_s

    def saved(self) -> None:
        self.last = time.monotonic()

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[ResumeTrigger]:
        """Route STOP_SIGNALS to `request_stop` while training; the previous handlers come back after.

        Python only lets the main thread install handlers; elsewhere (a worker thread) only the
        timer runs.
        """
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.signal(signum, self.request_stop) for signum in STOP_SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                # None: a handler installed outside Python, which cannot be put back; use the default
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def resume_point(state_dir: str | Path, grid: list[int], *, log: Callable[[str], None]) -> tuple[int, Path | None]:
    """Where training in `state_dir` continues: (step, file to restore it from, or None to start fresh).

    The latest grid checkpoint at or before the first missing grid step, or resume.pt if its step is
    later and still at or before that step (a later one would skip a grid checkpoint). An unreadable
    resume.pt is logged and passed over: it is only a shortcut.
    """
    have = set(existing_steps(state_dir))
    first_missing = min(s for s in grid if s not in have)
    start = max([s for s in have if s <= first_missing], default=0)
    source = checkpoint_path(state_dir, start) if start in have else None
    try:
        resume = load_resume(state_dir)
    except CheckpointError as exc:
        log(f"ignoring {exc}")
        return start, source
    if resume is None:
        return start, source
    step = resume["step"]
    if start < step <= first_missing:
        return step, resume_path(state_dir)
    reason = f"not after grid checkpoint {start}" if step <= start else f"after the missing grid step {first_missing}"
    log(f"ignoring {resume_path(state_dir)} at step {step}: {reason}")
    return start, source


def discard_resume(state_dir: str | Path, last_step: int, *, log: Callable[[str], None]) -> None:
    """Delete resume.pt once the grid up to `last_step` is complete, unless it is further on (a longer run's)."""
    try:
        resume = load_resume(state_dir)
    except CheckpointError:
        resume = None  # unreadable: nothing worth keeping
    if resume is not None and resume["step"] > last_step:
        log(f"keeping {resume_path(state_dir)}: its step {resume['step']} is beyond max_steps {last_step}")
        return
    remove_resume(state_dir)


@dataclass
class TrainState:
    denoiser: torch.nn.Module
    ema: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    perm: torch.Tensor  # [n] current epoch order
    cursor: int  # position in perm
    step: int


def seed_of(*parts: object) -> int:
    """Deterministic 63-bit seed from any tuple of labels."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def fused_adam(device: torch.device) -> bool:
    """Whether Adam runs as torch's fused kernel on this device (CPU and CUDA: one pass over the state
    instead of ~8 multi-tensor passes; the grouped path follows the same choice, so both agree).
    torch < 2.4 has no CPU kernel; there, and on other devices, Adam stays foreach."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        supported = _get_fused_kernels_supported_devices()
    except ImportError:  # an older torch: CUDA only
        supported = ["cuda"]
    return device.type in ("cpu", "cuda") and device.type in supported


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        params = list(params)
        fused = fused_adam(params[0].device)
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None,
                                foreach=None if fused else True)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)


def init_state(
    model_cfg: ModelConfig, train_cfg: TrainConfig, *, data_shape: tuple[int, ...], n: int, seed: int,
    device: torch.device,
) -> TrainState:
    """Fresh model (initialised from `seed` without touching the global RNG), optimizer and RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_of("init", seed))
        denoiser = build_denoiser(model_cfg, data_shape=data_shape).to(device)
    ema = None
    if train_cfg.ema_decay is not None:
        ema = build_denoiser(model_cfg, data_shape=data_shape).to(device)
        ema.load_state_dict(denoiser.state_dict())
        ema.requires_grad_(False)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed_of("batches", seed))
    perm = torch.randperm(n, generator=gen, device=device)
    return TrainState(denoiser, ema, make_optimizer(denoiser.parameters(), train_cfg), gen, perm, 0, 0)


def state_payload(state: TrainState) -> dict:
    return {
        "model": state.denoiser.state_dict(),
        "ema": None if state.ema is None else state.ema.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "rng": state.generator.get_state(),
        "perm": state.perm.cpu(),
        "cursor": state.cursor,
    }


def restore_state(
    ckpt: dict, model_cfg: ModelConfig, train_cfg: TrainConfig, *, data_shape: tuple[int, ...], n: int,
    seed: int, device: torch.device,
) -> TrainState:
    state = init_state(model_cfg, train_cfg, data_shape=data_shape, n=n, seed=seed, device=device)
    state.denoiser.load_state_dict(ckpt["model"])
    if state.ema is not None and ckpt.get("ema") is not None:
        state.ema.load_state_dict(ckpt["ema"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.generator.set_state(ckpt["rng"])
    state.perm = ckpt["perm"].to(device)
    state.cursor = int(ckpt["cursor"])
    state.step = int(ckpt["step"])
    return state


def next_batch(state: TrainState, n: int, batch_size: int) -> torch.Tensor | None:
    """Indices of the next minibatch (epoch-wise shuffling); None means the full set (B >= n)."""
    if batch_size >= n:
        return None
    if state.cursor + batch_size > n:
        state.perm = torch.randperm(n, generator=state.generator, device=state.perm.device)
        state.cursor = 0
    idx = state.perm[state.cursor : state.cursor + batch_size]
    state.cursor += batch_size
    return idx


def make_probe(
    x: torch.Tensor, *, size: int, model_cfg: ModelConfig, train_cfg: TrainConfig, vp_sigmas: torch.Tensor | None,
    tag: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed (x, sigma, noise) probe: the same sigmas and noises for every n, seed and step."""
    gen = torch.Generator().manual_seed(seed_of(PROBE_SEED, tag))
    idx = torch.arange(size) % x.shape[0]
    if train_cfg.probe_sigma is not None:
        sigma = torch.full((size,), float(train_cfg.probe_sigma))
    else:
        sigma = sample_sigma(
            size, parameterization=model_cfg.parameterization, p_mean=train_cfg.p_mean, p_std=train_cfg.p_std,
            vp_sigmas=vp_sigmas, generator=gen, device=torch.device("cpu"),
        )
    noise = torch.randn((size, *x.shape[1:]), generator=gen)
    return x[idx.to(x.device)], sigma.to(x.device), noise.to(x.device)


@torch.no_grad()
def probe_loss(denoiser: torch.nn.Module, probe, *, batch_size: int = 4096) -> float:
    x0, sigma, noise = probe
    total = 0.0
    for i in range(0, x0.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        total += float(denoising_loss(denoiser, x0[sl], sigma[sl], noise[sl]).double().sum())
    return total / x0.shape[0]


def autocast_context(precision: str, device: torch.device):
    """bf16 autocast around the forward pass for `train.precision: bf16`; a no-op for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_batch_loss(train_cfg: TrainConfig, device: torch.device) -> Callable:
    """`batch_loss(denoiser, x0, sigma, noise)` -> mean loss, under `train.precision` and `train.compile`.

    Batch and noise draws stay outside this function, so neither option changes the random streams.
    """
    def batch_loss(denoiser, x0, sigma, noise):
        with autocast_context(train_cfg.precision, device):
            per_sample = denoising_loss(denoiser, x0, sigma, noise)  # [B]
        return per_sample.float().mean()  # .float() is the identity in fp32

    return torch.compile(batch_loss) if train_cfg.compile else batch_loss


def set_tf32(enabled: bool) -> None:
    """`train.tf32`: allow TF32 tensor-core matmuls and convolutions (Ampere and later; no effect on CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def train_step(state: TrainState, x_train: torch.Tensor, *, model_cfg: ModelConfig, train_cfg: TrainConfig,
               vp_sigmas: torch.Tensor | None, batch_loss: Callable | None = None) -> torch.Tensor:
    """One optimizer step; returns the (detached) mean loss of the batch."""
    n = x_train.shape[0]
    idx = next_batch(state, n, train_cfg.batch_size)
    x0 = x_train if idx is None else x_train[idx]  # [B, ...]
    sigma = sample_sigma(
        x0.shape[0], parameterization=model_cfg.parameterization, p_mean=train_cfg.p_mean, p_std=train_cfg.p_std,
        vp_sigmas=vp_sigmas, generator=state.generator, device=x0.device,
    )
    noise = torch.randn(x0.shape, generator=state.generator, device=x0.device)
    loss = (batch_loss or make_batch_loss(train_cfg, x0.device))(state.denoiser, x0, sigma, noise)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if train_cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(state.denoiser.parameters(), train_cfg.grad_clip)
    state.optimizer.step()
    if state.ema is not None:
        with torch.no_grad():
            for p_ema, p in zip(state.ema.parameters(), state.denoiser.parameters()):
                p_ema.lerp_(p, 1 - train_cfg.ema_decay)
    state.step += 1
    return loss.detach()


def trajectory_hash(model_cfg: ModelConfig, train_cfg: TrainConfig, *, x_train: np.ndarray, seed: int) -> str:
    """Hash of everything that determines the training trajectory (not where it stops)."""
    train = {k: v for k, v in dataclasses.asdict(train_cfg).items() if k not in TrainConfig.TRAJECTORY_FREE}
    data_digest = hashlib.sha256(np.ascontiguousarray(x_train).tobytes()).hexdigest()[:16]
    # only the network's own keys: the family switch and other families' keys do not move the trajectory
    model = {k: v for k, v in family_model(dataclasses.asdict(model_cfg)).items() if k != "family"}
    return stable_hash({"model": model, "train": train, "data": data_digest, "seed": seed})


def run_training(
    x_train: np.ndarray, x_test: np.ndarray, *, model_cfg: ModelConfig, train_cfg: TrainConfig, seed: int,
    state_dir: str | Path, data_shape: tuple[int, ...], device: torch.device,
    log: Callable[[str], None] = print,
) -> dict[int, dict[str, float]]:
    """Train until every grid checkpoint exists in `state_dir`; return {step: probe losses}."""
    grid = checkpoint_grid(dataclasses.asdict(train_cfg))
    have = set(existing_steps(state_dir))
    missing = [s for s in grid if s not in have]
    n = x_train.shape[0]
    xt = torch.as_tensor(x_train, dtype=torch.float32, device=device).reshape(n, *data_shape)
    xv = torch.as_tensor(x_test, dtype=torch.float32, device=device).reshape(x_test.shape[0], *data_shape)
    vp_sigmas = (vp_sigma_schedule(beta_min=model_cfg.beta_min, beta_max=model_cfg.beta_max,
                                   num_timesteps=model_cfg.num_timesteps)
                 if model_cfg.parameterization == "ddpm" else None)
    probes = {
        names.TRAIN_LOSS: make_probe(xt, size=train_cfg.probe_size, model_cfg=model_cfg, train_cfg=train_cfg,
                                     vp_sigmas=vp_sigmas, tag="train"),
        names.TEST_LOSS: make_probe(xv, size=train_cfg.probe_size, model_cfg=model_cfg, train_cfg=train_cfg,
                                    vp_sigmas=vp_sigmas, tag="test"),
    }
    if missing:
        start, source = resume_point(state_dir, grid, log=lambda m: log(f"[train] {m}"))
        if source is not None:
            ckpt = load_checkpoint(source, map_location=device)
            state = restore_state(ckpt, model_cfg, train_cfg, data_shape=data_shape, n=n, seed=seed, device=device)
            log(f"[train] resuming from step {start} ({source})")
        else:
            state = init_state(model_cfg, train_cfg, data_shape=data_shape, n=n, seed=seed, device=device)
            log(f"[train] starting from scratch: {sum(p.numel() for p in state.denoiser.parameters()):,} parameters")
        with ResumeTrigger(train_cfg.resume_every_min).handling_signals() as trigger:
            _train_until(state, xt, grid=grid, have=have, probes=probes, model_cfg=model_cfg, train_cfg=train_cfg,
                         vp_sigmas=vp_sigmas, state_dir=state_dir, trigger=trigger, log=log)
    else:
        log("[train] every checkpoint of the grid exists; nothing to train")
    discard_resume(state_dir, grid[-1], log=lambda m: log(f"[train] {m}"))
    metrics = {}
    for step in grid:
        ckpt = load_checkpoint(checkpoint_path(state_dir, step))
        metrics[step] = dict(ckpt["metrics"])
    return metrics


def _train_until(state: TrainState, xt: torch.Tensor, *, grid: list[int], have: set[int], probes: dict,
                 model_cfg: ModelConfig, train_cfg: TrainConfig, vp_sigmas, state_dir, trigger: ResumeTrigger,
                 log) -> None:
    targets = [s for s in grid if s >= state.step]
    last = targets[-1]
    config = {"model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg),
              "data_shape": list(xt.shape[1:])}
    check_every = 1 if xt.device.type == "cpu" else 100
    batch_loss = make_batch_loss(train_cfg, xt.device)
    t0, steps0, running = time.perf_counter(), state.step, []
    for target in targets:
        while state.step < target:
            loss = train_step(state, xt, model_cfg=model_cfg, train_cfg=train_cfg, vp_sigmas=vp_sigmas,
                              batch_loss=batch_loss)
            running.append(loss)
            # at a grid step the checkpoint below is the resume point; a stop request waits one step
            save_resume_now = state.step < target and trigger.due()
            if state.step % check_every == 0 or state.step == target or save_resume_now:
                value = float(loss)
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"non-finite training loss ({value}) at step {state.step}"
                        + ("" if check_every == 1 else f" (checked every {check_every} steps)")
                        + f"; checkpoints up to step {max([s for s in have | set(grid) if s < state.step] or [0])}"
                        f" are kept in {state_dir}"
                    )
            if state.step % train_cfg.log_every == 0:
                rate = (state.step - steps0) / (time.perf_counter() - t0)
                mean = float(torch.stack(running).mean())
                running = []
                log(f"[train] step {state.step:>9d}/{last}  loss {mean:.4f}  {rate:,.0f} steps/s")
            if save_resume_now:
                path = save_resume(state_dir, state.step, {**state_payload(state), "config": config})
                trigger.saved()
                log(f"[train] resume state at step {state.step} saved to {path}")
                if trigger.signum is not None:
                    raise interrupted(trigger.signum, state.step, [path])
        if target not in have:
            denoiser = state.denoiser
            denoiser.eval()
            metrics = {key: probe_loss(denoiser, probe) for key, probe in probes.items()}
            denoiser.train()
            if not all(math.isfinite(v) for v in metrics.values()):
                raise TrainingDiverged(f"non-finite probe loss {metrics} at step {state.step}; earlier checkpoints kept")
            save_checkpoint(state_dir, target, {**state_payload(state), "config": config, "metrics": metrics})
            trigger.saved()
            have.add(target)
            log(f"[train] checkpoint step {target}: train {metrics[names.TRAIN_LOSS]:.4f}"
                f"  test {metrics[names.TEST_LOSS]:.4f}")


def interrupted(signum: int, step: int, paths: list[Path]) -> TrainingInterrupted:
    """The TrainingInterrupted for a stop on `signum` after `step`, with the state saved to `paths`."""
    if len(paths) == 1:
        where = str(paths[0])
    else:
        where = f"{len(paths)} resume files" + (f" ({paths[0]}, ...)" if paths else "")
    return TrainingInterrupted(
        f"stopped by {signal.Signals(signum).name} after step {step}; training state saved to {where}; "
        "rerun the same command to continue (no metrics were written)",
        signum=signum, step=step,
    )


def metrics_dataset(metrics: dict[int, dict[str, float]], *, n: int, seed: int, attrs: dict) -> xr.Dataset:
    steps = sorted(metrics)
    ds = xr.Dataset(
        {key: ((names.STEP,), np.array([metrics[s][key] for s in steps])) for key in (names.TRAIN_LOSS, names.TEST_LOSS)},
        coords={names.STEP: np.array(steps, dtype=np.int64), names.N: n, names.SEED: seed},
        attrs=attrs,
    )
    return names.annotate(ds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="diffmem train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="training subset (.npz from `diffmem subsample`)")
    parser.add_argument("--dataset", required=True, help="dataset (.npz from `diffmem prepare-data`) for the test probe")
    parser.add_argument("--model", required=True, help="model config slice (JSON or path)")
    parser.add_argument("--train-cfg", required=True, help="train config slice (JSON or path)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--state-root", required=True, help="folder for checkpoints (kept across reruns)")
    parser.add_argument("--out", required=True, help="train_metrics.nc")
    args = parser.parse_args(argv)
    try:
        model_cfg = ModelConfig.from_dict(read_json_arg(args.model))
        train_cfg = TrainConfig.from_dict(read_json_arg(args.train_cfg))
    except ConfigError as exc:
        fail(str(exc))
    if model_cfg.family != "network":
        fail(f"diffmem train: model.family {model_cfg.family!r} is not trained by this stage "
             "(empirical / linear: diffmem closed-form-sample; random_features: diffmem rf-train)")
    torch.set_num_threads(train_cfg.threads)
    set_tf32(train_cfg.tf32)
    try:
        device, _gpu_lease = select_device(train_cfg.device)  # the lease holds this job's GPU until exit
    except RuntimeError as exc:
        fail(str(exc))
    x_train, _, shape = load_train(args.train)
    test = load_dataset(args.dataset).test
    data_shape = tuple(shape) if (shape and model_cfg.arch == "unet") else (x_train.shape[1],)
    digest = trajectory_hash(model_cfg, train_cfg, x_train=x_train, seed=args.seed)
    state_dir = Path(args.state_root) / digest
    print(f"[train] n={x_train.shape[0]} seed={args.seed} device={device} state={state_dir}", flush=True)
    try:
        metrics = run_training(x_train, test, model_cfg=model_cfg, train_cfg=train_cfg, seed=args.seed,
                               state_dir=state_dir, data_shape=data_shape, device=device,
                               log=lambda m: print(m, flush=True))
    except (TrainingDiverged, CheckpointError) as exc:
        fail(str(exc))
    except TrainingInterrupted as exc:
        fail(str(exc), code=128 + exc.signum)  # the shell's convention for "killed by this signal"
    ds = metrics_dataset(metrics, n=x_train.shape[0], seed=args.seed,
                         attrs={"state_dir": str(state_dir), "trajectory_hash": digest})
    atomic_to_netcdf(ds, args.out)
    print(f"[train] wrote {args.out}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
