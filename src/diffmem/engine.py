"""The training engine: trains a stack of k >= 1 denoisers, checkpointing on a step grid.

A run is a training subset, a seed and a state folder. `diffmem train` takes one run or several:
the per-(n, seed) rule passes one, the grouped rules (train.grouped) pass a group of runs, and both
call the same command, which calls `train_runs`, this module's one training loop. A single run is a
stack of one, not a separate path. For every member, at every step, the loop:
- draws the member's batch indices (epoch-wise shuffling), noise levels and noise from the member's
  own generator, seeded from its seed, in that order (`draw_batch`; loss.sigma_draw/sigma_from_draw);
- evaluates the stacked denoiser (models/stacked.py; the preconditioning of models/precond.py) and
  the loss of loss.py, one mean per member;
- takes the gradient of the sum of the members' losses (members are independent, so each gets its
  own gradient) and updates every member with optim.py's Adam or SGD, elementwise, so each member
  gets exactly the update torch.optim would give it alone; then the EMA.

One run under the native kernel (a stack of one; EDM, Adam without gradient clipping, no EMA) takes its steps
in chunks instead (`train_chunk`, up to CHUNK_STEPS steps in one call of the kernel, ending at every grid
step, progress line and epoch's end): per epoch one randn holds the steps' noise levels and noise in the
order the steps draw them (`bulk_draws`, checked bit for bit against `draw_batch` on a copy of the stream
before a run starts, `chunked_native`; where the check fails, the steps go one at a time), so the
weights, Adam moments, losses and random streams are those of the steps one at a time, bit for bit
(tests/test_mlp_native.py).

So a member's trajectory does not depend on the group it trains in: exactly (bit for bit) for a
stack of one, which tests/test_engine.py holds to a plain torch.optim loop, and to float rounding of
the batched kernels (~1e-6) in a larger stack. On CPU the default MLP in fp32 trains, by default
(`train.kernel: auto`), in diffmem's own C kernel (models/mlp_native.py: the loss and gradients of each
member in turn, the same as autograd's to float rounding; 3.5x the model-steps/s of torch's kernels for
one digits model, 2.2x in a stack of six, docs/benchmarks.md "The native kernel"), whose members
train in a stack exactly as alone (tests/test_mlp_native.py); with `train.kernel: torch` it is
differentiated by hand (models/mlp_grad.py: the same numbers as autograd, bit for bit), and there too a
larger stack computes each member with the kernels it gets alone: at the default experiment's shapes a
grouped run equals its run alone bit for bit (tests/test_mlp_grad.py). Members with different n train full-batch on their
own n when n < batch_size: batches are padded to the largest and a mask drops the padded rows from
each member's mean.

Every grid step writes one self-contained checkpoint per member (checkpoint.py; the single-model
format: a state_dict, torch.optim's optimizer state_dict, the generator, the epoch order) and records
the training and held-out losses on a fixed probe of (x, sigma, noise) triples, identical across
steps, n and seeds. Training resumes exactly from the latest usable checkpoint, whatever stack the
run trained in before: members whose resume step differs train as separate stacks, one after the
other. A member whose loss turns non-finite is reported and no longer checkpointed; the others
finish, then the job fails naming it.

Grid steps are log-spaced, so on long runs they are far apart. In between, the state is also saved
to `resume.pt` in each state folder every `train.resume_every_min` minutes, and at once when the job
gets SIGTERM or SIGUSR1 (what SLURM sends before its time limit or on preemption): the run then
stops after the current step (or chunk of steps, milliseconds) with exit status 128 + signal number and
writes no train_metrics.nc.
Rerunning the same command continues from `resume.pt` when it is later than the last grid
checkpoint; it is deleted once the grid is complete.

`train.keep` decides what stays (checkpoint.py): `all` keeps every grid checkpoint full; `weights` and
`sampling` rewrite each grid checkpoint as weights only once the next one is saved (the latest full
one is the resume point), and when the grid is complete the last one too, `weights` first saving its
full state as `resume.pt`, so a raised max_steps resumes exactly.

Options that change how the step runs, not what it computes (docs/scaling-out.md, "Training numerics"):
`train.compile` compiles the loss with its backward (torch.compile; mode reduce-overhead, i.e. CUDA
graphs, on a GPU), `train.precision: bf16` autocasts the forward pass, `train.channels_last` stores
images channels-last, `train.tf32` allows TF32 matmuls on GPUs.

The training stage (`diffmem train`, `diffmem.stages.train`) reads the runs and writes their metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import math
import signal
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from diffmem import names, native
from diffmem.checkpoint import (
    DATA_OFFSET,
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_path,
    existing_steps,
    is_resumable,
    load_checkpoint,
    load_resume,
    remove_resume,
    resume_path,
    save_checkpoint,
    save_resume,
    strip_to_weights,
)
from diffmem.config import (
    ModelConfig,
    TrainConfig,
    checkpoint_grid,
    family_model,
    stable_hash,
    without_quiet_defaults,
)
from diffmem.loss import denoising_loss, sample_sigma, sigma_draw, sigma_from_draw
from diffmem.models import build_denoiser, mlp_grad, mlp_native
from diffmem.models.stacked import StackedDenoiser, stack_modules, unstack_state_dict
from diffmem.optim import member_optimizer_state, optimizer_step_, param_groups, stacked_optimizer_state

PROBE_SEED = 20250523  # one probe for every n, seed and step
CHUNK_STEPS = 256  # the most steps one native call takes (train_chunk); a stop request waits for them
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # what SLURM sends before a time limit or a preemption

logger = logging.getLogger(__name__)  # `log` is the progress callback of the functions below


class TrainingDiverged(RuntimeError):
    pass


class KernelRefused(ValueError):
    """`train.kernel: native` asked for a step the native kernel cannot compute here; the message says why."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on a signal after saving its state to resume.pt; rerunning continues it."""

    def __init__(self, message: str, *, signum: int, step: int) -> None:
        super().__init__(message)
        self.signum, self.step = signum, step


class ResumeTrigger:
    """When to write resume.pt: `every_min` minutes after the last save (or the start), or after a stop signal.

    `due()` is cheap enough to ask after every step (one monotonic clock read). The signal handlers
    only record the signal; the training loop saves and stops after the next step it completes that
    is not a grid step (a grid step writes its checkpoint, then trains one more step). Where the steps
    go in chunks (`train_chunk`), it asks after each chunk, and a chunk that starts with a save due is
    one step long, so a request made between steps is met after the same step.
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

    The latest full grid checkpoint at or before the first missing grid step, or resume.pt if its step
    is not before that checkpoint and still at or before the missing step (a later one would skip a grid
    checkpoint). Weights-only checkpoints (train.keep) cannot be resumed from and are passed over. An
    unreadable resume.pt is logged and passed over: it is only a shortcut.
    """
    have = set(existing_steps(state_dir))
    first_missing = min(s for s in grid if s not in have)
    start, source = 0, None
    for step in sorted((s for s in have if s <= first_missing), reverse=True):
        if is_resumable(load_checkpoint(checkpoint_path(state_dir, step))):
            start, source = step, checkpoint_path(state_dir, step)
            break
    try:
        resume = load_resume(state_dir)
    except CheckpointError as exc:
        log(f"ignoring {exc}")
        return start, source
    if resume is None:
        return start, source
    step = resume["step"]
    if start <= step <= first_missing and (source is None or step > start):
        return step, resume_path(state_dir)
    reason = f"not after grid checkpoint {start}" if step <= start else f"after the missing grid step {first_missing}"
    log(f"ignoring {resume_path(state_dir)} at step {step}: {reason}")
    return start, source


def finish_state(state_dir: str | Path, grid: list[int], keep: str, *, log: Callable[[str], None],
                 stripped: set[int] | frozenset[int] = frozenset()) -> None:
    """A run's grid is complete: leave what `keep` asks for (train.keep).

    all: the full grid checkpoints, no resume.pt. weights: every grid checkpoint weights only, and
    resume.pt holding the full state of the last one. sampling: weights only, no resume.pt. A resume.pt
    beyond the grid (a longer run's) is kept whatever the policy. `stripped`: grid steps this process
    already wrote weights only (not read back).
    """
    last = grid[-1]
    try:
        resume = load_resume(state_dir)
    except CheckpointError:
        resume = None  # unreadable: nothing worth keeping
    if resume is not None and resume["step"] > last:
        log(f"keeping {resume_path(state_dir)}: its step {resume['step']} is beyond max_steps {last}")
    elif keep == "weights":
        final = load_checkpoint(checkpoint_path(state_dir, last))
        if is_resumable(final):
            save_resume(state_dir, last, {k: v for k, v in final.items() if k not in ("version", "step", "metrics")})
        elif resume is None or resume["step"] != last:
            remove_resume(state_dir)
            log(f"no full state at step {last} to keep as resume.pt: a raised max_steps will train from the start")
    else:
        remove_resume(state_dir)
    if keep != "all":
        now = [s for s in grid if s not in stripped and strip_to_weights(checkpoint_path(state_dir, s))]
        if now or stripped:
            log(f"{len(now) + len(set(stripped) & set(grid))} checkpoints kept as weights only (train.keep: {keep})")


def seed_of(*parts: object) -> int:
    """Deterministic 63-bit seed from any tuple of labels."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def data_offset(x: torch.Tensor, center: str) -> torch.Tensor | None:
    """What `train.center` subtracts from a run's training set x [n, *data_shape]: None (none), the mean of
    each channel (channel: axis 0 of an image's (C, H, W), the one channel of flat data) or the mean
    sample (pixel), broadcast to the data shape [*data_shape]."""
    if center == "none":
        return None
    if center == "pixel":
        return x.mean(dim=0)
    if center != "channel":
        raise ValueError(f"unknown train.center {center!r}")
    if x.ndim == 2:  # flat data: one channel
        return x.mean().expand(x.shape[1:]).clone()
    return x.mean(dim=(0, *range(2, x.ndim)), keepdim=True)[0].expand(x.shape[1:]).clone()


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
def probe_loss(denoiser: StackedDenoiser, probe, *, batch_size: int = 4096) -> float:
    """Mean loss of one model (an unstacked member, `StackedDenoiser.member`) on a fixed probe."""
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


def set_tf32(enabled: bool) -> None:
    """`train.tf32`: allow TF32 tensor-core matmuls and convolutions (Ampere and later; no effect on CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


@dataclass
class Run:
    """One training run: its subset x_train [n, D], its seed and its state folder."""

    x_train: np.ndarray
    seed: int
    state_dir: Path

    @property
    def label(self) -> str:
        return f"n={self.x_train.shape[0]} seed={self.seed}"


@dataclass
class Stream:
    """One member's random stream and epoch order: batch indices, noise levels and noise come from it."""

    generator: torch.Generator
    perm: torch.Tensor  # [n] current epoch order
    cursor: int  # position in perm

    def next_batch(self, n: int, batch_size: int) -> torch.Tensor | None:
        """Indices of the next minibatch (epoch-wise shuffling); None means the full set (B >= n)."""
        if batch_size >= n:
            return None
        if self.cursor + batch_size > n:
            self.perm = torch.randperm(n, generator=self.generator, device=self.perm.device)
            self.cursor = 0
        idx = self.perm[self.cursor : self.cursor + batch_size]
        self.cursor += batch_size
        return idx


@dataclass
class StackData:
    x: torch.Tensor  # [k, n_max, *data_shape], zero-padded beyond each member's n
    n: list[int]

    @classmethod
    def stack(cls, subsets: list[torch.Tensor]) -> StackData:
        n = [int(s.shape[0]) for s in subsets]
        if len(subsets) == 1:
            return cls(subsets[0].unsqueeze(0), n)
        x = subsets[0].new_zeros((len(subsets), max(n), *subsets[0].shape[1:]))
        for m, s in enumerate(subsets):
            x[m, : n[m]] = s
        return cls(x, n)


@dataclass
class Stack:
    """The training state of k members: stacked parameters [k, ...], optimizer state, streams, step."""

    params: dict[str, torch.Tensor]  # name -> [k, ...]
    buffers: dict[str, torch.Tensor]  # name -> [k, ...]
    ema: dict[str, torch.Tensor] | None  # name -> [k, ...]
    opt: dict[str, dict[str, torch.Tensor]]  # see optim.py; empty before the first step
    streams: list[Stream]
    step: int
    workspace: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # optimizer scratch, not state
    kernel: Callable | None = None  # the native step bound to `params` (loss_and_grads), not state

    def __post_init__(self) -> None:
        # What the forward pass sees and autograd differentiates. For k > 1 the stacked leaves
        # themselves; for one model its own unstacked tensors (`params` are then [1, ...] views of
        # them, for the optimizer, the EMA and the checkpoints), so the step runs the module's plain
        # 2-D computation with no member axis to add and remove at every layer.
        self.single = len(self.streams) == 1
        if self.single:
            self.leaves = {n: t.detach()[0].clone().requires_grad_() for n, t in self.params.items()}
            self.params = {n: t.detach().unsqueeze(0) for n, t in self.leaves.items()}
            self.forward_buffers = {n: t[0] for n, t in self.buffers.items()}
        else:
            self.leaves, self.forward_buffers = self.params, self.buffers


def fresh_member(model_cfg: ModelConfig, *, data_shape: tuple[int, ...], n: int, seed: int,
                 device: torch.device) -> tuple[torch.nn.Module, Stream]:
    """A new member: the network initialised from `seed` (without touching the global RNG) and its stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_of("init", seed))
        denoiser = build_denoiser(model_cfg, data_shape=data_shape).to(device)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed_of("batches", seed))
    return denoiser, Stream(gen, torch.randperm(n, generator=gen, device=device), 0)


def start_stack(runs: list[Run], sources: list[Path | None], *, model_cfg: ModelConfig, train_cfg: TrainConfig,
                data_shape: tuple[int, ...], device: torch.device, log: Callable[[str], None]) -> Stack:
    """Every member fresh (source None) or restored from its checkpoint or resume.pt; all at one step."""
    modules, streams, ema_sds, opt_states, steps = [], [], [], [], []
    for run, source in zip(runs, sources):
        module, stream = fresh_member(model_cfg, data_shape=data_shape, n=run.x_train.shape[0], seed=run.seed,
                                      device=device)
        ckpt = None
        if source is not None:
            ckpt = load_checkpoint(source, map_location=device)
            module.load_state_dict(ckpt["model"])
            stream.generator.set_state(ckpt["rng"])
            stream.perm, stream.cursor = ckpt["perm"].to(device), int(ckpt["cursor"])
            log(f"{run.label}: resuming from step {int(ckpt['step'])} ({source})")
        else:
            log(f"{run.label}: starting from scratch, "
                f"{sum(p.numel() for p in module.parameters()):,} parameters")
        modules.append(module)
        streams.append(stream)
        ema_sds.append(None if ckpt is None else ckpt.get("ema"))
        opt_states.append({} if ckpt is None else ckpt["optimizer"]["state"])
        steps.append(0 if ckpt is None else int(ckpt["step"]))
    if len(set(steps)) != 1:
        raise ValueError(f"members of one stack must be at the same step, got {sorted(set(steps))}")
    params, buffers = stack_modules(modules)
    ema = None
    if train_cfg.ema_decay is not None:
        ema = {name: torch.stack([(p if sd is None else sd[name].to(device)) for p, sd in
                                  zip(p_all.detach(), ema_sds)]) for name, p_all in params.items()}
    opt = stacked_optimizer_state(opt_states, list(params), step=steps[0], device=device)
    return Stack(params, buffers, ema, opt, streams, steps[0])


def member_payload(stack: Stack, m: int, *, base: torch.nn.Module, groups: list[dict]) -> dict:
    """Member m's checkpoint fields: the single-model format (state_dict, torch.optim state_dict, stream)."""
    stream = stack.streams[m]
    return {
        "model": unstack_state_dict(base, stack.params, stack.buffers, m),
        "ema": None if stack.ema is None else unstack_state_dict(base, stack.ema, stack.buffers, m),
        "optimizer": {"state": member_optimizer_state(stack.opt, list(stack.params), m, step=stack.step),
                      "param_groups": [dict(g) for g in groups]},
        "rng": stream.generator.get_state(),
        "perm": stream.perm.cpu(),
        "cursor": stream.cursor,
    }


def draw_batch(stack: Stack, data: StackData, *, model_cfg: ModelConfig, train_cfg: TrainConfig,
               vp_sigmas: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Every member's next batch from its own stream: indices, then noise levels, then noise.

    Returns x0 [k, B, ...], sigma [k, B], noise [k, B, ...] and a mask [k, B] of real rows (None
    when no member is padded); B is the largest effective batch. Padded rows are finite (a real
    data point, noise 0, the sigma of a zero draw) and masked out of the loss.
    """
    device, shape, k = data.x.device, tuple(data.x.shape[2:]), len(stack.streams)
    idxs, draws, noises = [], [], []
    for stream, n in zip(stack.streams, data.n):
        idx = stream.next_batch(n, train_cfg.batch_size)  # None: full batch, in data order
        size = n if idx is None else idx.shape[0]
        draws.append(sigma_draw(size, parameterization=model_cfg.parameterization, vp_sigmas=vp_sigmas,
                                generator=stream.generator, device=device))
        noises.append(torch.randn((size, *shape), generator=stream.generator, device=device))
        idxs.append(idx)
    sizes = [d.shape[0] for d in draws]
    mask = None
    if k == 1:
        draw, noise = draws[0].unsqueeze(0), noises[0].unsqueeze(0)
        x0 = data.x[:, : sizes[0]] if idxs[0] is None else data.x[:, idxs[0]]
    elif len(set(sizes)) == 1:
        draw, noise = torch.stack(draws), torch.stack(noises)
        if all(i is None for i in idxs):  # every member full-batch on the same n
            x0 = data.x[:, : sizes[0]]
        else:
            full = torch.arange(sizes[0], device=device)
            x0 = data.x[torch.arange(k, device=device)[:, None], torch.stack([full if i is None else i for i in idxs])]
    else:
        width = max(sizes)
        index = torch.zeros((k, width), dtype=torch.long, device=device)
        draw = torch.zeros((k, width), dtype=draws[0].dtype, device=device)
        noise = torch.zeros((k, width, *shape), device=device)
        mask = torch.zeros((k, width), device=device)
        for m, (i, d, z) in enumerate(zip(idxs, draws, noises)):
            index[m, : d.shape[0]] = torch.arange(d.shape[0], device=device) if i is None else i
            draw[m, : d.shape[0]] = d
            noise[m, : d.shape[0]] = z
            mask[m, : d.shape[0]] = 1.0
        x0 = data.x[torch.arange(k, device=device)[:, None], index]
    sigma = sigma_from_draw(draw, parameterization=model_cfg.parameterization, p_mean=train_cfg.p_mean,
                            p_std=train_cfg.p_std, vp_sigmas=vp_sigmas)
    return x0, sigma, noise, mask


def make_step_loss(base: torch.nn.Module, train_cfg: TrainConfig, device: torch.device,
                   generators: list[torch.Generator] | None = None, *, by_hand: bool = True) -> Callable:
    """`step_loss(params, buffers, x0, sigma, noise, mask)` -> per-member mean losses [k].

    `generators` are the members' random streams, from which a U-Net's dropout draws its masks (after
    the member's batch, noise levels and noise).

    `train.precision: bf16` autocasts the forward pass; `train.channels_last` stores image batches
    channels-last; `train.compile` compiles the function, so its backward is compiled with it
    (mode reduce-overhead on CUDA: the forward and backward replay as CUDA graphs).

    For the default MLP in fp32, uncompiled, on CPU, the function carries `native` (`train.kernel` auto where
    the C kernel runs, or native): a factory of models/mlp_native.py's step, bound to a stack's parameters
    by `loss_and_grads` (the same losses and gradients to float rounding, docs/benchmarks.md "The native
    kernel"); and `by_hand`: the losses and gradients computed without autograd by models/mlp_grad.py, the
    same bit for bit: 1.28x the model-steps/s of autograd for one model on CPU and 1.96x in a stack of six
    (docs/benchmarks.md, "Training by hand"), which `loss_and_grads` uses where there is no `native`.
    `kernel` names the one used ("native" or "torch"). `by_hand=False` leaves both off (benchmarks), and
    so does `train.tikhonov` > 0.

    The losses include `train.tikhonov`'s penalty on the score (loss.denoising_loss); the probe losses
    (`probe_loss`) do not: they stay the plain denoising loss, comparable across penalties.
    """
    channels_last = train_cfg.channels_last
    tikhonov = float(train_cfg.tikhonov)  # the Tikhonov penalty on the score (loss.py); 0: none

    def step_loss(params, buffers, x0, sigma, noise, mask):
        stacked = sigma.ndim == 2  # else one model, unstacked: x0 [B, ...], sigma [B]
        if channels_last and x0.ndim == 4 and not stacked:  # one model's images [B, C, H, W]
            x0 = x0.contiguous(memory_format=torch.channels_last)
            noise = noise.contiguous(memory_format=torch.channels_last)
        with autocast_context(train_cfg.precision, device):
            denoiser = StackedDenoiser(base, params, buffers, stacked=stacked, generators=generators)
            per_sample = denoising_loss(denoiser, x0, sigma, noise, tikhonov=tikhonov).float()  # [k, B] or [B]; float(): fp32 identity
        if not stacked:
            return per_sample.mean().unsqueeze(0)
        if mask is None:
            return per_sample.mean(dim=1)
        return (per_sample * mask).sum(dim=1) / mask.sum(dim=1)

    step_loss.kernel = "torch"
    if not train_cfg.compile:
        plain_cpu_mlp = _plain_cpu(train_cfg, device)
        if by_hand and plain_cpu_mlp and mlp_grad.supports(base):
            step_loss.by_hand = functools.partial(mlp_grad.mlp_loss_and_grads, base)
        if by_hand and train_cfg.kernel != "torch":
            why = native_kernel_refusal(base, plain_cpu_mlp)
            if why is None:
                step_loss.native = functools.partial(mlp_native.NativeMLPStep, base)
                step_loss.kernel = "native"
            elif train_cfg.kernel == "native":
                raise KernelRefused(f"train.kernel: native cannot run this job: {why}; set train.kernel to auto or torch")
            else:
                logger.info(f"the native kernel does not run this job ({why}); torch's kernels compute the step")
        return step_loss
    if train_cfg.kernel == "native":
        raise KernelRefused("train.kernel: native cannot run this job: train.compile is on; set train.kernel to auto or torch")
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(step_loss, mode=mode, dynamic=False)


def _plain_cpu(train_cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the step is the plain loss in fp32 on CPU, the one the by-hand and native steps compute. CPU only:
    measured there; on a GPU a stack's per-member layer norms would be k launches each and the loss's unit
    gradient a host-to-device copy every step, where autograd's path has neither (the Tikhonov penalty is
    differentiated by autograd: mlp_grad computes the plain loss's gradients)."""
    return float(train_cfg.tikhonov) == 0 and device.type == "cpu" and train_cfg.precision == "fp32"


def stack_width(base: torch.nn.Module, train_cfg: TrainConfig, device: torch.device, runs: int) -> int:
    """How many of a job's `runs` train at once as one stack (`train.stack`). auto: one at a time where the native
    kernel computes the step (make_step_loss's choice, without its logging): each run's weights, gradients and
    Adam moments (3 MB for the digits MLP) then stay in the caches between steps, where a stack of six cycles six
    times as much memory through them every step (docs/benchmarks.md, "One run at a time"); every run otherwise, for torch's kernels,
    whose small-batch steps are launch-bound and gain from stacking, and for a GPU."""
    if train_cfg.stack != "auto":
        return max(1, min(int(train_cfg.stack), runs))
    native_step = (not train_cfg.compile and train_cfg.kernel != "torch"
                   and native_kernel_refusal(base, _plain_cpu(train_cfg, device)) is None)
    return 1 if native_step else runs


def native_kernel_refusal(base: torch.nn.Module, plain_cpu_mlp: bool) -> str | None:
    """Why the native kernel (models/mlp_native.py) cannot compute this step, or None when it can."""
    if not plain_cpu_mlp:
        return "it computes the plain loss in fp32 on CPU (no tikhonov, no bf16, no GPU)"
    if not mlp_native.supports(base):
        return "it computes arch mlp with a width and emb_dim that are multiples of 8"
    return native.available()


def loss_and_grads(stack: Stack, step_loss: Callable, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                   mask: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Per-member losses [k] of one batch and the gradients, shaped like `stack.params` ([k, ...])."""
    if getattr(step_loss, "native", None) is not None:  # diffmem's C kernel (models/mlp_native.py)
        return native_kernel(stack, step_loss)(x0, sigma, noise, mask)
    if stack.single:  # one model: its own shapes (mask is None: a single member is never padded)
        x0, sigma, noise = x0[0], sigma[0], noise[0]
    by_hand = getattr(step_loss, "by_hand", None)
    if by_hand is not None:  # the same numbers, bit for bit, without autograd (models/mlp_grad.py)
        losses, grads = by_hand(stack.leaves, stack.forward_buffers, x0, sigma, noise, mask)
    else:
        losses = step_loss(stack.leaves, stack.forward_buffers, x0, sigma, noise, mask)  # [k]
        grads = torch.autograd.grad(losses.sum(), list(stack.leaves.values()))
    return losses, ([g.unsqueeze(0) for g in grads] if stack.single else list(grads))


def update_(stack: Stack, grads: list[torch.Tensor], train_cfg: TrainConfig) -> None:
    """The optimizer's update of every member (its step `stack.step + 1`) from `grads`: optim.py's, or, where the
    native kernel computed them, its own Adam on the gradients it just wrote (models/mlp_native.py; Adam
    without gradient clipping, to the float rounding of torch's fused kernel)."""
    if stack.kernel is not None and train_cfg.optimizer == "adam" and train_cfg.grad_clip is None:
        stack.kernel.adam_(stack.opt, step=stack.step + 1, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    else:
        optimizer_step_(stack.params, grads, stack.opt, train_cfg, step=stack.step + 1, workspace=stack.workspace)


def native_kernel(stack: Stack, step_loss: Callable) -> Callable:
    """The native step bound to the stack's parameters (made on first use; step_loss.native is its factory)."""
    if stack.kernel is None:
        stack.kernel = step_loss.native(stack.params)
    return stack.kernel


def chunked_native(stack: Stack, data: StackData, step_loss: Callable, *, model_cfg: ModelConfig,
                   train_cfg: TrainConfig) -> bool:
    """Whether `_train_until` takes this stack's steps in chunks (`train_chunk`) instead of one `train_step` at a
    time: the native kernel's step of one run (a stack of one), EDM, Adam without gradient clipping, no EMA, and
    draws that `bulk_draws` makes bit for bit as `draw_batch` makes them (`bulk_draws_exact`, tried here on a copy
    of the run's stream)."""
    if (getattr(step_loss, "native", None) is None or not stack.single or stack.ema is not None
            or model_cfg.parameterization != "edm" or train_cfg.optimizer != "adam" or train_cfg.grad_clip is not None):
        return False
    return bulk_draws_exact(stack.streams[0], data, model_cfg=model_cfg, train_cfg=train_cfg)


def bulk_draws(stream: Stream, n: int, steps: int, shape: tuple[int, ...], *,
               train_cfg: TrainConfig) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """The next `steps` EDM steps' batch rows [steps, B] (None: the full set), noise levels [steps, B] and noise
    [steps, B, *shape] of one member's stream, drawn in as few calls as they can be: per epoch, the order when
    the epoch's first step needs it (Stream.next_batch), then the epoch's steps' normals (each step's
    sigma_draw, then its noise: draw_batch's order) in one randn. torch's CPU randn of a float tensor of 16 or
    more elements turns one 32-bit uniform per element into normals 16 at a time, so one randn equals the
    steps' own where B and the noise's size are multiples of 16; `bulk_draws_exact` checks it where it is used.
    A step's noise is a view into the draws, [B, *shape] contiguous."""
    batch = min(n, train_cfg.batch_size)
    per_step = batch * (1 + math.prod(shape))
    device = stream.generator.device
    normals = torch.empty(steps * per_step, device=device)
    rows = None if train_cfg.batch_size >= n else torch.empty((steps, batch), dtype=torch.long, device=device)
    done = 0
    while done < steps:
        todo = steps - done
        if rows is not None:  # the steps up to the epoch's end: consecutive rows of its order
            stream.next_batch(n, batch)  # the first of them draws a new order when the last epoch is used up
            todo = min(todo, 1 + (n - stream.cursor) // batch)
            start = stream.cursor - batch
            rows[done:done + todo] = stream.perm[start:start + todo * batch].view(todo, batch)
            stream.cursor = start + todo * batch
        torch.randn(todo * per_step, generator=stream.generator, out=normals[done * per_step:(done + todo) * per_step])
        done += todo
    normals = normals.view(steps, per_step)
    sigma = sigma_from_draw(normals[:, :batch], parameterization="edm", p_mean=train_cfg.p_mean,
                            p_std=train_cfg.p_std, vp_sigmas=None).contiguous()
    return rows, sigma, normals[:, batch:].view(steps, batch, *shape)


def bulk_draws_exact(stream: Stream, data: StackData, *, model_cfg: ModelConfig, train_cfg: TrainConfig) -> bool:
    """Whether `bulk_draws` makes, bit for bit, the batch rows, noise levels and noise `draw_batch` makes one step at
    a time, and leaves the stream (generator, order, position) as it does: tried on two copies of `stream` for
    three steps, or two epochs and a step (at most 300 steps)."""
    def copy() -> Stream:
        generator = torch.Generator(device=stream.generator.device)
        generator.set_state(stream.generator.get_state())
        return Stream(generator, stream.perm.clone(), stream.cursor)

    n, shape, batch = data.n[0], tuple(data.x.shape[2:]), train_cfg.batch_size
    steps = 3 if batch >= n else min(300, 2 * (n // batch) + 1)
    one, bulk = copy(), copy()
    stepwise = types.SimpleNamespace(streams=[one])  # what draw_batch reads of a stack
    x0s, sigmas, noises = [], [], []
    for _ in range(steps):
        x0, sigma, noise, _ = draw_batch(stepwise, data, model_cfg=model_cfg, train_cfg=train_cfg, vp_sigmas=None)
        x0s.append(x0[0])
        sigmas.append(sigma[0])
        noises.append(noise[0])
    rows, sigma, noise = bulk_draws(bulk, n, steps, shape, train_cfg=train_cfg)
    x0 = data.x[0, :n].expand(steps, *data.x.shape[1:]) if rows is None else data.x[0][rows]

    def same(a: list[torch.Tensor], b: torch.Tensor) -> bool:
        return torch.equal(torch.stack(a).contiguous().view(torch.int32), b.contiguous().view(torch.int32))

    return (same(x0s, x0) and same(sigmas, sigma) and same(noises, noise)
            and torch.equal(one.generator.get_state(), bulk.generator.get_state())
            and torch.equal(one.perm, bulk.perm) and one.cursor == bulk.cursor)


def train_chunk(stack: Stack, data: StackData, step_loss: Callable, *, steps: int, train_cfg: TrainConfig) -> torch.Tensor:
    """`steps` steps of a stack of one in one call of the native kernel (where `chunked_native` says so): the same
    steps, bit for bit, as `train_step` takes one at a time (the draws of `bulk_draws`; NativeMLPStep.train_steps);
    returns their losses [steps, 1]."""
    n = data.n[0]
    rows, sigma, noise = bulk_draws(stack.streams[0], n, steps, tuple(data.x.shape[2:]), train_cfg=train_cfg)
    losses = native_kernel(stack, step_loss).train_steps(
        data.x[0, :n].reshape(n, -1).contiguous(), rows, sigma, noise.reshape(steps, sigma.shape[1], -1), stack.opt,
        first_step=stack.step + 1, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    stack.step += steps
    return losses.unsqueeze(1)


def train_step(stack: Stack, data: StackData, *, step_loss: Callable, model_cfg: ModelConfig, train_cfg: TrainConfig,
               vp_sigmas: torch.Tensor | None) -> torch.Tensor:
    """One optimizer step of every member; returns the detached per-member mean losses [k]."""
    x0, sigma, noise, mask = draw_batch(stack, data, model_cfg=model_cfg, train_cfg=train_cfg, vp_sigmas=vp_sigmas)
    graphed = train_cfg.compile and x0.device.type == "cuda"  # the loss replays as CUDA graphs
    if graphed:
        torch.compiler.cudagraph_mark_step_begin()  # a new training step: the graphs' outputs may be reused
    losses, grads = loss_and_grads(stack, step_loss, x0, sigma, noise, mask)
    update_(stack, grads, train_cfg)
    if stack.ema is not None:
        torch._foreach_lerp_(list(stack.ema.values()), [p.detach() for p in stack.params.values()],
                             1 - train_cfg.ema_decay)
    stack.step += 1
    return losses.detach().clone() if graphed else losses.detach()  # a graph's output is overwritten by its next replay


def trajectory_hash(model_cfg: ModelConfig, train_cfg: TrainConfig, *, x_train: np.ndarray, seed: int) -> str:
    """Hash of everything that determines the training trajectory (not where it stops)."""
    train = {k: v for k, v in dataclasses.asdict(train_cfg).items() if k not in TrainConfig.TRAJECTORY_FREE}
    train = without_quiet_defaults("train", train)
    data_digest = hashlib.sha256(np.ascontiguousarray(x_train).tobytes()).hexdigest()[:16]
    # only the network's own keys: the family switch and other families' keys do not move the trajectory
    model = {k: v for k, v in family_model(dataclasses.asdict(model_cfg)).items() if k != "family"}
    model = without_quiet_defaults("model", model)
    return stable_hash({"model": model, "train": train, "data": data_digest, "seed": seed})


@dataclass
class _Member:
    run: Run
    have: set[int]
    train_probe: tuple
    test_probe: tuple
    offset: torch.Tensor | None  # train.center: the mean subtracted from this run's data (data shape), or None
    last_saved: tuple[int, dict] | None = None  # (step, payload) of the full grid checkpoint last written
    stripped: set[int] = field(default_factory=set)  # grid steps written weights only by this process
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)  # probe losses of the steps written here


def _train_until(stack: Stack, data: StackData, members: list[_Member], *, base: torch.nn.Module, grid: list[int],
                 model_cfg: ModelConfig, train_cfg: TrainConfig, vp_sigmas,
                 trigger: ResumeTrigger, log) -> dict[int, str]:
    """Train until the last grid step, checkpointing each member; returns {member: divergence message}.

    Raises TrainingInterrupted after saving every member's resume.pt when `trigger` got a stop signal.
    """
    step_loss = make_step_loss(base, train_cfg, data.x.device, generators=[st.generator for st in stack.streams])
    if getattr(step_loss, "kernel", "torch") == "native":
        log("the training step runs in diffmem's native kernel (train.kernel; models/mlp_native.py)")
    groups = param_groups(base.parameters(), train_cfg)
    config = {"model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg),
              "data_shape": list(data.x.shape[2:])}
    targets = [s for s in grid if s >= stack.step]
    last, k = targets[-1], len(members)
    check_every = 1 if data.x.device.type == "cpu" else 100  # a finiteness check syncs a GPU
    diverged: dict[int, str] = {}
    chunked = chunked_native(stack, data, step_loss, model_cfg=model_cfg, train_cfg=train_cfg)
    t0, steps0, running = time.perf_counter(), stack.step, []
    for target in targets:
        while stack.step < target:
            if chunked:  # steps up to the target, the next progress line, and one step when a save is due already
                steps = 1 if trigger.due() else min(CHUNK_STEPS, target - stack.step,
                                                    train_cfg.log_every - stack.step % train_cfg.log_every)
                losses = train_chunk(stack, data, step_loss, steps=steps, train_cfg=train_cfg)  # [S, k]
            else:
                losses = train_step(stack, data, step_loss=step_loss, model_cfg=model_cfg, train_cfg=train_cfg,
                                    vp_sigmas=vp_sigmas).unsqueeze(0)
            running.append(losses)
            # at a grid step the checkpoints below are the resume point; a stop request waits one step
            save_resume_now = stack.step < target and trigger.due()
            if ((stack.step % check_every == 0 or stack.step == target or save_resume_now)
                    and not bool(torch.isfinite(losses).all())):
                bad = ~torch.isfinite(losses)
                for m in torch.nonzero(bad.any(dim=0)).flatten().tolist():
                    if m not in diverged:
                        at = stack.step - losses.shape[0] + 1 + int(torch.nonzero(bad[:, m])[0, 0])  # first bad step
                        kept = max([s for s in members[m].have if s < at] or [0])
                        diverged[m] = (f"{members[m].run.label}: non-finite training loss at step {at}"
                                       + ("" if check_every == 1 else f" (checked every {check_every} steps)")
                                       + f"; checkpoints up to step {kept} are kept in {members[m].run.state_dir}")
                        logger.warning(diverged[m])
                if len(diverged) == k:
                    return diverged
            if stack.step % train_cfg.log_every == 0:
                rate = (stack.step - steps0) / (time.perf_counter() - t0)
                mean = torch.cat(running).mean(dim=0)
                running = []
                spread = "" if k == 1 else f" (members {float(mean.min()):.4f}..{float(mean.max()):.4f})"
                log(f"step {stack.step:>9d}/{last}  loss {float(mean.mean()):.4f}{spread}  {rate:,.0f} steps/s"
                    + ("" if k == 1 else f", {rate * k:,.0f} model-steps/s"))
            if save_resume_now:
                paths = [save_resume(member.run.state_dir, stack.step, {
                    **member_payload(stack, m, base=base, groups=groups), "config": config,
                }) for m, member in enumerate(members) if m not in diverged]
                trigger.saved()
                log(f"resume state at step {stack.step} saved to "
                    + (str(paths[0]) if len(paths) == 1 else f"{len(paths)} resume files ({paths[0]}, ...)"))
                if trigger.signum is not None:
                    raise interrupted(trigger.signum, stack.step, paths)
        base.eval()
        for m, member in enumerate(members):
            if target in member.have or m in diverged:
                continue
            one = StackedDenoiser(base, stack.params, stack.buffers).member(m)
            metrics = {names.TRAIN_LOSS: probe_loss(one, member.train_probe),
                       names.TEST_LOSS: probe_loss(one, member.test_probe)}
            if not all(math.isfinite(v) for v in metrics.values()):
                diverged[m] = f"{member.run.label}: non-finite probe loss {metrics} at step {stack.step}"
                logger.warning(diverged[m])
                continue
            payload = {**member_payload(stack, m, base=base, groups=groups), "config": config, "metrics": metrics,
                       **({} if member.offset is None else {DATA_OFFSET: member.offset.cpu()})}
            save_checkpoint(member.run.state_dir, target, payload)
            if train_cfg.keep != "all":  # the new checkpoint is the resume point; the one before needs only its weights
                if previous := [s for s in member.have if s < target]:
                    prev = max(previous)
                    # the payload written at that step, still in memory, spares reading the file back
                    known = member.last_saved[1] if member.last_saved and member.last_saved[0] == prev else None
                    strip_to_weights(checkpoint_path(member.run.state_dir, prev), known)
                    member.stripped.add(prev)
                member.last_saved = (target, {"version": FORMAT_VERSION, "step": target, **payload})  # = the file
            member.have.add(target)
            member.metrics[target] = metrics
            log(f"{member.run.label}: checkpoint step {target}: train {metrics[names.TRAIN_LOSS]:.4f}"
                f"  test {metrics[names.TEST_LOSS]:.4f}")
        base.train()
        trigger.saved()
        if len(diverged) == k:
            break
    return diverged


def train_runs(runs: list[Run], x_test: np.ndarray, *, model_cfg: ModelConfig, train_cfg: TrainConfig,
               data_shape: tuple[int, ...], device: torch.device,
               log: Callable[[str], None] = logger.info) -> list[dict[int, dict[str, float]]]:
    """Train every run until each grid checkpoint exists in its state folder; return, per run, {step: probe losses}.

    Runs with nothing missing are skipped; runs resuming from different steps train as separate
    stacks, and so do runs beyond `stack_width` (train.stack), one stack after another. A diverged run does
    not stop the others: TrainingDiverged, naming it, is raised after every other run has finished.
    """
    grid = checkpoint_grid(dataclasses.asdict(train_cfg))
    xv = torch.as_tensor(x_test, dtype=torch.float32, device=device).reshape(x_test.shape[0], *data_shape)
    with torch.random.fork_rng(devices=[]):  # the base only lends its structure; leave the global RNG alone
        base = build_denoiser(model_cfg, data_shape=data_shape).to(device)
    vp_sigmas = base.sigmas if model_cfg.parameterization == "ddpm" else None
    probe_kw = dict(size=train_cfg.probe_size, model_cfg=model_cfg, train_cfg=train_cfg, vp_sigmas=vp_sigmas)
    test_probe = make_probe(xv, tag="test", **probe_kw)
    by_start: dict[int, list[int]] = {}
    sources: dict[int, Path | None] = {}
    for i, run in enumerate(runs):
        say = lambda m, label=run.label: log(f"{label}: {m}")  # noqa: E731
        have = set(existing_steps(run.state_dir))
        if all(s in have for s in grid):
            say("every checkpoint of the grid exists; nothing to train")
            finish_state(run.state_dir, grid, train_cfg.keep, log=say)
            continue
        start, sources[i] = resume_point(run.state_dir, grid, log=say)
        by_start.setdefault(start, []).append(i)
    errors: list[str] = []
    written: dict[int, dict[int, dict[str, float]]] = {}  # run index -> probe losses of the steps trained here
    width = stack_width(base, train_cfg, device, len(runs))
    stacks = [(start, indices[j:j + width]) for start, indices in sorted(by_start.items())
              for j in range(0, len(indices), width)]
    if width < len(runs) and len(stacks) > 1:
        log(f"{len(runs)} runs train in stacks of at most {width} (train.stack: {train_cfg.stack}), one stack after another")
    with ResumeTrigger(train_cfg.resume_every_min).handling_signals() as trigger:
        for start, indices in stacks:
            sub = [runs[i] for i in indices]
            log(f"training {len(sub)} run{'s' if len(sub) > 1 else ''} from step {start} to {grid[-1]}"
                f" on {device}")
            stack = start_stack(sub, [sources[i] for i in indices], model_cfg=model_cfg, train_cfg=train_cfg,
                                data_shape=data_shape, device=device, log=log)
            subsets = [torch.as_tensor(r.x_train, dtype=torch.float32, device=device).reshape(-1, *data_shape)
                       for r in sub]
            offsets = [data_offset(x, train_cfg.center) for x in subsets]
            subsets = [x if o is None else x - o for x, o in zip(subsets, offsets)]
            data = StackData.stack(subsets)
            members = [_Member(r, set(existing_steps(r.state_dir)), make_probe(x, tag="train", **probe_kw),
                               test_probe if o is None else (test_probe[0] - o, *test_probe[1:]), o)
                       for r, x, o in zip(sub, subsets, offsets)]
            trigger.saved()  # the timer counts training time, not the loading above
            diverged = _train_until(stack, data, members, base=base, grid=grid,
                                    model_cfg=model_cfg, train_cfg=train_cfg, vp_sigmas=vp_sigmas, trigger=trigger,
                                    log=log)
            errors += [diverged[m] for m in sorted(diverged)]
            written.update({i: member.metrics for i, member in zip(indices, members)})
            for m, run in enumerate(sub):
                if m not in diverged:
                    finish_state(run.state_dir, grid, train_cfg.keep, stripped=members[m].stripped,
                                 log=lambda line, label=run.label: log(f"{label}: {line}"))
    if errors:
        raise TrainingDiverged("; ".join(errors))
    return [{step: written.get(i, {}).get(step) or dict(load_checkpoint(checkpoint_path(run.state_dir, step))["metrics"])
             for step in grid} for i, run in enumerate(runs)]


def run_training(x_train: np.ndarray, x_test: np.ndarray, *, seed: int, state_dir: str | Path,
                 **kwargs) -> dict[int, dict[str, float]]:
    """`train_runs` for one run (a stack of one); returns {step: probe losses}."""
    return train_runs([Run(x_train, seed, Path(state_dir))], x_test, **kwargs)[0]


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

