"""Grouped training: k independent denoisers trained in one process as one batched computation.

A group is a list of members, each a training subset, a seed and a state directory (typically all
seeds of one n; members may also differ in n). Their parameters are stacked along a leading member
axis with `torch.func.stack_module_state`, and one forward/backward pass evaluates every member
with `torch.vmap` over `torch.func.functional_call(base_module, member_params, ...)`.

Why stacked parameters + vmap rather than k processes or a hand-batched model:
- The models of this study are small (an MLP step is a few dozen tiny kernels). k processes pay
  Python, kernel-launch and CUDA-context overhead k times and still leave a GPU mostly idle; under
  vmap a Linear becomes one batched matmul and a conv one grouped conv, so a group step costs
  about as many kernels as one model's step, whatever k.
- It works for any `nn.Module` (the MLP and the U-Net) without rewriting the network; a
  hand-written "ensemble layer" would be needed per architecture and per layer type. The one
  exception is the MLP, the default and most used network: `stacked_mlp` writes its forward with
  batched matmuls on the stacked parameters, which on CPU makes the k = 16 forward and backward
  ~25% faster than vmap (vmap's weight gradients come out transposed) and saves vmap's reshuffling
  kernels on a GPU. A test holds it to the module's output.
- Members stay independent: no op mixes the member axis and the loss is the sum of per-member
  mean losses, so member m's gradient is exactly that of its own loss.
The gain is the per-step overhead saved, so it is large on a GPU (launch-bound small models) and
small on CPU, where these models are already compute-bound (see benchmarks/README.md). A group of
one skips vmap and runs the single-model kernels.

What stays per member, so that its trajectory is the one `diffmem.train` gives it (exactly for a
group of one; to float rounding of batched kernels, ~1e-6, otherwise):
- its data subset, on the device, zero-padded to the largest n (padded rows are never drawn);
- its RNG stream and epoch order: a generator seeded as in `train.init_state`, drawing batch
  indices (`train.next_batch`), noise levels (`loss.sample_sigma`) and noise in `train.train_step`'s
  order, so its random draws are identical to the single-model path;
- its optimizer state: Adam and SGD with momentum run here on stacked tensors. Adam calls torch's
  fused kernel on CPU and CUDA, as `train.make_optimizer`'s Adam(fused=True) does (elementwise, so
  each member gets exactly its own update; gradients are made contiguous first, because the kernel
  silently misreads vmap's transposed weight gradients), elsewhere the `torch._foreach_*` sequence
  of torch.optim's foreach implementation; SGD that sequence (L2 weight decay added to the
  gradient, bias correction and eps placement as in torch.optim.Adam);
- its checkpoints, written in the single-model format (the fields of `train.state_payload` plus
  config and metrics), so `diffmem sample` works unchanged and a grouped run resumes on the
  single path and vice versa. EMA and the ddpm parameterisation are supported;
- its `resume.pt` (see train.py): every member of a (sub-)group saves one, at the same step, on the
  `train.resume_every_min` timer and on SIGTERM / SIGUSR1 (which then stops the run, exit status
  128 + signal number, no metrics written). It is the single path's format, so either path
  continues from the other's.

Members with different n: a member with n < batch_size trains full-batch on its n points, so
effective batch sizes differ. Batches are padded to the largest (with finite values) and a mask
removes padded rows from each member's mean loss. Members whose resume step differs (grid checkpoint
or resume.pt) are trained as separate sub-groups, one after the other.

Run: `python -m diffmem.grouped --train a.npz b.npz --seeds 0 1 --dataset dataset.npz
--model '<json>' --train-cfg '<json>' --state-roots r0 r1 --outs m0.nc m1.nc`
(each output is the `train_metrics.nc` that `diffmem train` would write for that member).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.func import functional_call, stack_module_state

from diffmem import names
from diffmem.checkpoint import (
    CheckpointError,
    checkpoint_path,
    existing_steps,
    load_checkpoint,
    save_checkpoint,
    save_resume,
)
from diffmem.config import ConfigError, ModelConfig, TrainConfig, checkpoint_grid, read_json_arg
from diffmem.data import load_dataset, load_train
from diffmem.io import atomic_to_netcdf, fail
from diffmem.loss import denoising_loss
from diffmem.models import build_denoiser
from diffmem.train import (
    ResumeTrigger, TrainingDiverged, TrainingInterrupted, TrainState, autocast_context, discard_resume, init_state,
    fused_adam, interrupted, make_optimizer, make_probe, metrics_dataset, next_batch, probe_loss, restore_state, resume_point,
    set_tf32, trajectory_hash,
)

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam defaults, as used by train.make_optimizer
ADAM_EPS = 1e-8


@dataclass
class MemberStream:
    """One member's batch-order state: the fields `train.next_batch` reads and advances."""

    generator: torch.Generator
    perm: torch.Tensor  # [n] current epoch order
    cursor: int


@dataclass
class GroupData:
    x: torch.Tensor  # [k, n_max, *data_shape], zero-padded beyond each member's n
    n: list[int]

    @classmethod
    def stack(cls, subsets: list[torch.Tensor]) -> GroupData:
        n = [int(s.shape[0]) for s in subsets]
        x = subsets[0].new_zeros((len(subsets), max(n), *subsets[0].shape[1:]))
        for m, s in enumerate(subsets):
            x[m, : n[m]] = s
        return cls(x, n)


@dataclass
class GroupState:
    params: dict[str, torch.Tensor]  # name -> [k, ...] leaves that require grad
    buffers: dict[str, torch.Tensor]  # name -> [k, ...]
    ema: dict[str, torch.Tensor] | None  # name -> [k, ...]
    # name -> {"exp_avg", "exp_avg_sq"} (adam) or {"momentum_buffer"} (sgd); empty before the first step
    opt: dict[str, dict[str, torch.Tensor]]
    streams: list[MemberStream]
    step: int
    # reused scratch buffers (not state): fresh multi-MB temporaries each step cost page faults on CPU
    workspace: dict[str, list[torch.Tensor]] = dataclasses.field(default_factory=dict)


def check_supported(model_cfg: ModelConfig, train_cfg: TrainConfig) -> None:
    """Raise NotImplementedError, naming the option, for settings the grouped path does not implement."""
    if train_cfg.optimizer not in ("adam", "sgd"):
        raise NotImplementedError(f"grouped training: train.optimizer={train_cfg.optimizer!r} is not implemented")
    if model_cfg.parameterization not in ("edm", "ddpm"):
        raise NotImplementedError(
            f"grouped training: model.parameterization={model_cfg.parameterization!r} is not implemented")


# ----------------------------------------------------------------------------- state <-> single path


def group_from_states(states: list[TrainState]) -> GroupState:
    """Stack single-model states (fresh from `train.init_state` or resumed by `train.restore_state`)."""
    steps = {s.step for s in states}
    if len(steps) != 1:
        raise ValueError(f"members of one group must be at the same step, got {sorted(steps)}")
    params, buffers = stack_module_state([s.denoiser for s in states])
    ema = None
    if states[0].ema is not None:
        ema = {name: torch.stack([dict(s.ema.named_parameters())[name].detach() for s in states]) for name in params}
    # torch.optim keys its state by position in module.parameters(), i.e. named_parameters() order
    opt_states = [s.optimizer.state_dict()["state"] for s in states]
    opt: dict[str, dict[str, torch.Tensor]] = {}
    if any(opt_states):
        if not all(opt_states):
            raise ValueError("members of one group must all have optimizer state, or none")
        for i, name in enumerate(params):
            per_member = [st[i] for st in opt_states]
            if "step" in per_member[0] and any(int(p["step"]) != states[0].step for p in per_member):
                raise ValueError(f"optimizer step of {name} differs from the training step {states[0].step}")
            opt[name] = {key: torch.stack([p[key] for p in per_member]) for key in per_member[0] if key != "step"}
    streams = [MemberStream(s.generator, s.perm, s.cursor) for s in states]
    return GroupState(params, buffers, ema, opt, streams, states[0].step)


def _member_state_dict(base: torch.nn.Module, stacked: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                       m: int) -> dict:
    # base.state_dict() gives the exact keys, order and _metadata of the single path's state_dict
    sd = base.state_dict()
    for key in sd:
        sd[key] = (stacked[key] if key in stacked else buffers[key])[m].detach().clone()
    return sd


def member_payload(state: GroupState, m: int, *, base: torch.nn.Module, param_groups: list[dict]) -> dict:
    """Member m's checkpoint fields, in the format of `train.state_payload`."""
    opt_state = {}
    for i, name in enumerate(state.params):
        if name in state.opt:
            entry = {key: value[m].clone() for key, value in state.opt[name].items()}
            if "exp_avg" in entry:  # torch.optim.Adam keeps its step count per parameter, first
                entry = {"step": torch.tensor(float(state.step), dtype=torch.float32), **entry}
            opt_state[i] = entry
    stream = state.streams[m]
    return {
        "model": _member_state_dict(base, state.params, state.buffers, m),
        "ema": None if state.ema is None else _member_state_dict(base, state.ema, state.buffers, m),
        "optimizer": {"state": opt_state, "param_groups": [dict(g) for g in param_groups]},
        "rng": stream.generator.get_state(),
        "perm": stream.perm.cpu(),
        "cursor": stream.cursor,
    }


# ----------------------------------------------------------------------------- batches and loss


def sigma_draw(size: int, *, model_cfg: ModelConfig, vp_sigmas: torch.Tensor | None, generator: torch.Generator,
               device: torch.device) -> torch.Tensor:
    """The random draw inside `loss.sample_sigma`: normals (edm) or timesteps (ddpm) [size]."""
    if model_cfg.parameterization == "edm":
        return torch.randn(size, generator=generator, device=device)
    return torch.randint(0, vp_sigmas.shape[0], (size,), generator=generator, device=device)


def sigma_from_draw(draw: torch.Tensor, *, model_cfg: ModelConfig, train_cfg: TrainConfig,
                    vp_sigmas: torch.Tensor | None) -> torch.Tensor:
    """The deterministic rest of `loss.sample_sigma`, elementwise, so it can run once on [k, B].

    Splitting sample_sigma this way saves k x 3 small ops per step (what dominates a large group on
    a GPU); tests pin draw + transform to sample_sigma bit for bit.
    """
    if model_cfg.parameterization == "edm":
        return (train_cfg.p_mean + train_cfg.p_std * draw).exp()
    return vp_sigmas.to(draw.device)[draw].float()


def draw_group_batch(
    streams: list[MemberStream], data: GroupData, *, model_cfg: ModelConfig, train_cfg: TrainConfig,
    vp_sigmas: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Every member's next batch, drawn from its own stream in `train.train_step`'s order.

    Returns x0 [k, B, ...], sigma [k, B], noise [k, B, ...] and a mask [k, B] of real rows (None
    when no member is padded); B is the largest effective batch. Padded rows are finite (a real
    data point, noise 0, the sigma of a zero draw) and masked out of the loss.
    """
    device, shape = data.x.device, tuple(data.x.shape[2:])
    idxs, draws, noises = [], [], []
    for stream, n in zip(streams, data.n):
        idx = next_batch(stream, n, train_cfg.batch_size)  # None: full batch, in data order
        size = n if idx is None else idx.shape[0]
        draws.append(sigma_draw(size, model_cfg=model_cfg, vp_sigmas=vp_sigmas, generator=stream.generator,
                                device=device))
        noises.append(torch.randn((size, *shape), generator=stream.generator, device=device))
        idxs.append(idx)
    sizes = [d.shape[0] for d in draws]
    rows = torch.arange(len(streams), device=device)[:, None]  # [k, 1]
    mask = None
    if len(set(sizes)) == 1:
        draw, noise = torch.stack(draws), torch.stack(noises)
        if all(i is None for i in idxs):  # every member full-batch on the same n
            x0 = data.x[:, : sizes[0]]
        else:
            full = torch.arange(sizes[0], device=device)
            x0 = data.x[rows, torch.stack([full if i is None else i for i in idxs])]
    else:
        width = max(sizes)
        index = torch.zeros((len(streams), width), dtype=torch.long, device=device)
        draw = torch.zeros((len(streams), width), dtype=draws[0].dtype, device=device)
        noise = torch.zeros((len(streams), width, *shape), device=device)
        mask = torch.zeros((len(streams), width), device=device)
        for m, (i, d, z) in enumerate(zip(idxs, draws, noises)):
            index[m, : d.shape[0]] = torch.arange(d.shape[0], device=device) if i is None else i
            draw[m, : d.shape[0]] = d
            noise[m, : d.shape[0]] = z
            mask[m, : d.shape[0]] = 1.0
        x0 = data.x[rows, index]
    sigma = sigma_from_draw(draw, model_cfg=model_cfg, train_cfg=train_cfg, vp_sigmas=vp_sigmas)
    return x0, sigma, noise, mask


class _Bound:
    """`denoiser(x, sigma)` evaluated with one member's parameters, plus the base's loss weight."""

    def __init__(self, base: torch.nn.Module, params: dict, buffers: dict) -> None:
        self.base, self.params, self.buffers = base, params, buffers

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (self.params, self.buffers), (x, sigma))

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.base.loss_weight(sigma)


def _stacked_linear(params: dict, name: str, h: torch.Tensor) -> torch.Tensor:
    """nn.Linear `name` of every member at once: h [k, B, in] -> [k, B, out] (weights [k, out, in])."""
    return torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), h, params[f"{name}.weight"].transpose(1, 2))


def _stacked_layer_norm(params: dict, name: str, h: torch.Tensor) -> torch.Tensor:
    """nn.LayerNorm `name` (default eps) of every member: normalise, then each member's affine map."""
    out = torch.nn.functional.layer_norm(h, h.shape[-1:])
    return out * params[f"{name}.weight"].unsqueeze(1) + params[f"{name}.bias"].unsqueeze(1)


def stacked_mlp(params: dict, buffers: dict, x_in: torch.Tensor, c_noise: torch.Tensor, *, depth: int,
                prefix: str = "net.") -> torch.Tensor:
    """models/mlp.py's MLP.forward for every member at once, on stacked parameters.

    x_in [k, B, D], c_noise [k, B] -> [k, B, D]. The same layers in the same order as the module,
    written with batched matmuls (`baddbmm`) instead of vmap over nn.Linear: on CPU the vmapped
    forward and backward of the default MLP at k = 16 take ~25% longer (its weight gradients come out
    transposed), and on a GPU every avoided vmap shuffle is a kernel launch saved.
    `tests/test_grouped.py` checks it against the module and against vmap.
    """
    silu = torch.nn.functional.silu
    p = {name[len(prefix):]: t for name, t in params.items() if name.startswith(prefix)}
    freqs = buffers[f"{prefix}embed.freqs"]  # [k, half]
    arg = c_noise.float().unsqueeze(-1) * freqs.unsqueeze(1)  # [k, B, half]
    emb = torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)
    emb = silu(_stacked_linear(p, "emb_mlp.2", silu(_stacked_linear(p, "emb_mlp.0", emb))))
    h = _stacked_linear(p, "inp", x_in)
    for i in range(depth):
        z = _stacked_linear(p, f"blocks.{i}.fc1", silu(_stacked_layer_norm(p, f"blocks.{i}.norm", h)))
        z = z + _stacked_linear(p, f"blocks.{i}.emb", emb)
        h = h + _stacked_linear(p, f"blocks.{i}.fc2", silu(z))
    return _stacked_linear(p, "out", silu(_stacked_layer_norm(p, "out_norm", h)))


def stacked_denoiser(base: torch.nn.Module) -> Callable | None:
    """`denoise(params, buffers, x [k, B, ...], sigma [k, B]) -> x0_hat` for an MLP behind EDM or VP
    preconditioning (models/precond.py, the same formulas on a leading member axis); None for other
    networks, which go through vmap."""
    from diffmem.models.mlp import MLP
    from diffmem.models.precond import EDMPrecond, VPPrecond

    if not isinstance(base.net, MLP) or not isinstance(base, (EDMPrecond, VPPrecond)):
        return None
    depth = len(base.net.blocks)

    def denoise(params, buffers, x, sigma):
        k, b = x.shape[:2]
        flat = x.reshape(k, b, -1)
        s = sigma.unsqueeze(-1).to(flat.dtype)  # [k, B, 1]
        if isinstance(base, EDMPrecond):
            sd = base.sigma_data
            c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
            c_in = 1 / (s**2 + sd**2).sqrt()
            f = stacked_mlp(params, buffers, c_in * flat, 250.0 * sigma.to(flat.dtype).log(), depth=depth)
            out = c_skip * flat + c_out * f
        else:
            c_in = 1 / (1 + s**2).sqrt()
            t = base.sigma_to_t(sigma.reshape(-1)).reshape(k, b).to(flat.dtype)
            out = flat - s * stacked_mlp(params, buffers, c_in * flat, t, depth=depth)
        return out.reshape(x.shape)

    return denoise


def make_group_loss(base: torch.nn.Module, *, train_cfg: TrainConfig, device: torch.device) -> Callable:
    """`group_loss(params, buffers, x0, sigma, noise, mask)` -> per-member mean losses [k].

    A group of one runs the single-model kernels; an MLP group runs `stacked_denoiser`; any other
    network is vmapped over `functional_call`.
    """
    stacked = stacked_denoiser(base)

    def member_loss(params, buffers, x0, sigma, noise, mask):  # one member: x0 [B, ...]
        with autocast_context(train_cfg.precision, device):
            per_sample = denoising_loss(_Bound(base, params, buffers), x0, sigma, noise).float()  # [B]
        if mask is None:
            return per_sample.mean()
        return (per_sample * mask).sum() / mask.sum()

    def unmasked(params, buffers, x0, sigma, noise):
        return member_loss(params, buffers, x0, sigma, noise, None)

    def group_loss(params, buffers, x0, sigma, noise, mask):
        if x0.shape[0] == 1:  # a group of one runs the single-model kernels (vmap's differ in rounding)
            one = lambda stacked: {name: t[0] for name, t in stacked.items()}  # noqa: E731
            mask0 = None if mask is None else mask[0]
            return member_loss(one(params), one(buffers), x0[0], sigma[0], noise[0], mask0).unsqueeze(0)
        if stacked is not None:
            s = sigma.reshape(*sigma.shape, *([1] * (x0.ndim - 2)))
            with autocast_context(train_cfg.precision, device):
                x0_hat = stacked(params, buffers, x0 + s * noise, sigma)
                err = (x0_hat - x0).pow(2).reshape(*x0.shape[:2], -1).mean(dim=2)
                per_sample = (base.loss_weight(sigma) * err).float()  # [k, B], as loss.denoising_loss
            if mask is None:
                return per_sample.mean(dim=1)
            return (per_sample * mask).sum(dim=1) / mask.sum(dim=1)
        if mask is None:
            return torch.vmap(unmasked)(params, buffers, x0, sigma, noise)
        return torch.vmap(member_loss)(params, buffers, x0, sigma, noise, mask)

    return torch.compile(group_loss) if train_cfg.compile else group_loss


# ----------------------------------------------------------------------------- optimizers on stacked tensors


@torch.no_grad()
def adam_update_(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                 exp_avg_sqs: list[torch.Tensor], *, step: int, lr: float, weight_decay: float,
                 betas: tuple[float, float] = ADAM_BETAS, eps: float = ADAM_EPS,
                 denom: list[torch.Tensor] | None = None) -> None:
    """One Adam step (Kingma & Ba 2015, Alg. 1) with `step` counting this update (1 for the first).

    The op sequence of torch.optim.Adam(foreach=True)'s non-capturable path, so results agree
    bit for bit: L2 weight decay added to the gradient, m <- lerp(m, g, 1 - beta1),
    v <- beta2 v + (1 - beta2) g^2, p <- p - lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
    `denom`, if given, is scratch space shaped like `params` (same values, no allocation).
    """
    beta1, beta2 = betas
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    # torch keeps the step as a float32 tensor and reads it back with .item()
    step_f = float(torch.tensor(float(step), dtype=torch.float32))
    bias_correction1 = 1 - beta1**step_f
    bias_correction2 = 1 - beta2**step_f
    step_size = (lr / bias_correction1) * -1
    if denom is None:
        denom = torch._foreach_sqrt(exp_avg_sqs)
    else:
        torch._foreach_copy_(denom, exp_avg_sqs)
        torch._foreach_sqrt_(denom)
    torch._foreach_div_(denom, [bias_correction2**0.5] * len(denom))
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, [step_size] * len(params))


@torch.no_grad()
def fused_adam_update_(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                       exp_avg_sqs: list[torch.Tensor], *, step: int, lr: float, weight_decay: float,
                       betas: tuple[float, float] = ADAM_BETAS, eps: float = ADAM_EPS) -> None:
    """One Adam step through torch's fused kernel, the one torch.optim.Adam(fused=True) calls.

    Each element's update depends only on its own values, so stacked members get exactly the
    update each gets from the single path's optimizer. `step` counts this update (1 for the first);
    torch.optim keeps it as a float32 tensor on the parameters' device.
    """
    steps = [torch.tensor(float(step), dtype=torch.float32, device=params[0].device)] * len(params)
    # the kernel reads every tensor as contiguous memory without checking (torch 2.13, CPU): vmap's
    # weight gradients come transposed ([k, out, in] with strides of [k, in, out]) and would be misread
    grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
    if not all(t.is_contiguous() for group in (params, exp_avgs, exp_avg_sqs) for t in group):
        raise ValueError("fused Adam needs contiguous parameters and moments")
    torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr, beta1=betas[0], beta2=betas[1],
                       weight_decay=weight_decay, eps=eps, amsgrad=False, maximize=False)


@torch.no_grad()
def sgd_update_(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor] | None, *,
                lr: float, momentum: float, weight_decay: float) -> list[torch.Tensor] | None:
    """One step of SGD with (heavy-ball) momentum, as torch.optim.SGD(foreach=True), dampening 0.

    The first step initialises the momentum buffer to the gradient. Returns the buffers.
    """
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if momentum != 0:
        if bufs is None:
            bufs = [g.detach().clone() for g in grads]
        else:
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads, alpha=1)
        grads = bufs
    torch._foreach_add_(params, grads, alpha=-lr)
    return bufs


@torch.no_grad()
def clip_grad_norm_per_member_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ applied to each member separately; returns the norms [k]."""
    k = grads[0].shape[0]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), dim=1) for g in grads])  # [T, k]
    total = torch.linalg.vector_norm(norms, dim=0)  # [k]
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.reshape(k, *([1] * (g.ndim - 1))))
    return total


def in_slabs(update: Callable, lists: list[list[torch.Tensor]], *, max_bytes: int = 1 << 20) -> None:
    """Apply an elementwise multi-tensor `update(*lists)` in cache-sized pieces on CPU.

    On CUDA the foreach kernels already fuse across tensors: one call. On CPU a foreach op is a loop
    over tensors, so an update's ~10 passes over k stacked models would stream from memory; instead
    each call gets ~max_bytes of the first list: small tensors packed together, large ones cut
    along the member axis. Elementwise ops give the same values either way.
    """
    first = lists[0]
    if first[0].device.type != "cpu":
        update(*lists)
        return
    pending: list[tuple[int, int, int]] = []  # (tensor, first member, end member)
    size = 0
    for i, tensor in enumerate(first):
        row_bytes = max(1, tensor[0].numel() * tensor.element_size())
        rows = max(1, max_bytes // row_bytes)
        for m0 in range(0, tensor.shape[0], rows):
            m1 = min(m0 + rows, tensor.shape[0])
            if pending and size + (m1 - m0) * row_bytes > max_bytes:
                update(*[[lst[j][a:b] for j, a, b in pending] for lst in lists])
                pending, size = [], 0
            pending.append((i, m0, m1))
            size += (m1 - m0) * row_bytes
    if pending:
        update(*[[lst[j][a:b] for j, a, b in pending] for lst in lists])


def group_step(state: GroupState, data: GroupData, *, group_loss: Callable, model_cfg: ModelConfig,
               train_cfg: TrainConfig, vp_sigmas: torch.Tensor | None) -> torch.Tensor:
    """One optimizer step of every member; returns the detached per-member mean losses [k]."""
    x0, sigma, noise, mask = draw_group_batch(state.streams, data, model_cfg=model_cfg, train_cfg=train_cfg,
                                              vp_sigmas=vp_sigmas)
    losses = group_loss(state.params, state.buffers, x0, sigma, noise, mask)  # [k]
    params = list(state.params.values())
    # members are independent, so d(sum of losses)/d(member m's params) is member m's gradient
    grads = list(torch.autograd.grad(losses.sum(), params))
    if train_cfg.grad_clip is not None:
        clip_grad_norm_per_member_(grads, train_cfg.grad_clip)
    names_ = list(state.params)
    if train_cfg.optimizer == "adam":
        if not state.opt:
            state.opt = {n: {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                         for n, p in state.params.items()}
        moments = [[state.opt[n]["exp_avg"] for n in names_], [state.opt[n]["exp_avg_sq"] for n in names_]]
        if fused_adam(params[0].device):  # as train.make_optimizer: the fused kernel, one pass
            fused_adam_update_(params, grads, *moments, step=state.step + 1, lr=train_cfg.lr,
                               weight_decay=train_cfg.weight_decay)
        else:
            if "denom" not in state.workspace:
                state.workspace["denom"] = [torch.empty_like(p) for p in params]

            def adam(p, g, m, v, d):
                adam_update_(p, g, m, v, step=state.step + 1, lr=train_cfg.lr,
                             weight_decay=train_cfg.weight_decay, denom=d)

            in_slabs(adam, [params, grads, *moments, state.workspace["denom"]])
    else:
        def sgd(p, g, b):
            return sgd_update_(p, g, b, lr=train_cfg.lr, momentum=train_cfg.momentum,
                               weight_decay=train_cfg.weight_decay)

        if state.opt:
            in_slabs(sgd, [params, grads, [state.opt[n]["momentum_buffer"] for n in names_]])
        else:  # first step (the momentum buffers start as the gradients) or no momentum
            bufs = sgd(params, grads, None)
            if bufs is not None:
                state.opt = {n: {"momentum_buffer": b} for n, b in zip(names_, bufs)}
    if state.ema is not None:
        torch._foreach_lerp_(list(state.ema.values()), [p.detach() for p in params], 1 - train_cfg.ema_decay)
    state.step += 1
    return losses.detach()


# ----------------------------------------------------------------------------- training loop


@dataclass
class _Member:
    label: str
    state_dir: Path
    have: set[int]
    train_probe: tuple


def _start_group(members: list[dict], sources: list[Path | None], start: int, *, model_cfg: ModelConfig,
                 train_cfg: TrainConfig, data_shape: tuple[int, ...], device: torch.device,
                 log) -> tuple[GroupState, GroupData]:
    """Each member restored from its source (grid checkpoint or resume.pt at `start`) or fresh (None)."""
    states, subsets = [], []
    for member, source in zip(members, sources):
        x = torch.as_tensor(member["x_train"], dtype=torch.float32, device=device)
        x = x.reshape(x.shape[0], *data_shape)
        label = f"n={x.shape[0]} seed={member['seed']}"
        kwargs = dict(data_shape=data_shape, n=x.shape[0], seed=member["seed"], device=device)
        if source is not None:
            state = restore_state(load_checkpoint(source, map_location=device), model_cfg, train_cfg, **kwargs)
            log(f"[train-group] {label}: resuming from step {start} ({source})")
        else:
            state = init_state(model_cfg, train_cfg, **kwargs)
            log(f"[train-group] {label}: starting from scratch")
        states.append(state)
        subsets.append(x)
    return group_from_states(states), GroupData.stack(subsets)


def _train_group_until(state: GroupState, data: GroupData, members: list[_Member], *, base: torch.nn.Module,
                       grid: list[int], test_probe: tuple, model_cfg: ModelConfig, train_cfg: TrainConfig,
                       data_shape: tuple[int, ...], vp_sigmas, trigger: ResumeTrigger, log) -> dict[int, str]:
    """Train until the last grid step, checkpointing each member; returns {member: divergence message}.

    Raises TrainingInterrupted after saving every member's resume.pt when `trigger` got a stop signal.
    """
    group_loss = make_group_loss(base, train_cfg=train_cfg, device=data.x.device)
    param_groups = make_optimizer(base.parameters(), train_cfg).state_dict()["param_groups"]
    config = {"model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg),
              "data_shape": list(data_shape)}
    targets = [s for s in grid if s >= state.step]
    last, k = targets[-1], len(members)
    check_every = 1 if data.x.device.type == "cpu" else 100
    diverged: dict[int, str] = {}
    t0, steps0, running = time.perf_counter(), state.step, []
    for target in targets:
        while state.step < target:
            losses = group_step(state, data, group_loss=group_loss, model_cfg=model_cfg, train_cfg=train_cfg,
                                vp_sigmas=vp_sigmas)
            running.append(losses)
            # at a grid step the checkpoints below are the resume point; a stop request waits one step
            save_resume_now = state.step < target and trigger.due()
            if ((state.step % check_every == 0 or state.step == target or save_resume_now)
                    and not bool(torch.isfinite(losses).all())):
                for m in torch.nonzero(~torch.isfinite(losses)).flatten().tolist():
                    if m not in diverged:
                        kept = max([s for s in members[m].have if s < state.step] or [0])
                        diverged[m] = (f"{members[m].label}: non-finite training loss at step {state.step}; "
                                       f"checkpoints up to step {kept} are kept in {members[m].state_dir}")
                        log(f"[train-group] {diverged[m]}")
            if state.step % train_cfg.log_every == 0:
                rate = (state.step - steps0) * k / (time.perf_counter() - t0)
                mean = torch.stack(running).mean(dim=0)
                running = []
                log(f"[train-group] step {state.step:>9d}/{last}  loss {float(mean.mean()):.4f} "
                    f"(members {float(mean.min()):.4f}..{float(mean.max()):.4f})  {rate:,.0f} model-steps/s")
            if save_resume_now:
                paths = [save_resume(member.state_dir, state.step, {
                    **member_payload(state, m, base=base, param_groups=param_groups), "config": config,
                }) for m, member in enumerate(members) if m not in diverged]
                trigger.saved()
                log(f"[train-group] resume state at step {state.step} saved for {len(paths)} members"
                    + (f" ({paths[0]}, ...)" if paths else ""))
                if trigger.signum is not None:
                    raise interrupted(trigger.signum, state.step, paths)
        saved = []
        base.eval()
        for m, member in enumerate(members):
            if target in member.have or m in diverged:
                continue
            bound = _Bound(base, {n: p[m] for n, p in state.params.items()},
                           {n: b[m] for n, b in state.buffers.items()})
            metrics = {names.TRAIN_LOSS: probe_loss(bound, member.train_probe),
                       names.TEST_LOSS: probe_loss(bound, test_probe)}
            if not all(math.isfinite(v) for v in metrics.values()):
                diverged[m] = f"{member.label}: non-finite probe loss {metrics} at step {state.step}"
                log(f"[train-group] {diverged[m]}")
                continue
            save_checkpoint(member.state_dir, target, {
                **member_payload(state, m, base=base, param_groups=param_groups),
                "config": config,
                "metrics": metrics,
            })
            member.have.add(target)
            saved.append(metrics)
        base.train()
        trigger.saved()
        if saved:
            train_l = [s[names.TRAIN_LOSS] for s in saved]
            test_l = [s[names.TEST_LOSS] for s in saved]
            log(f"[train-group] checkpoint step {target} for {len(saved)} members: train {min(train_l):.4f}.."
                f"{max(train_l):.4f}  test {min(test_l):.4f}..{max(test_l):.4f}")
    return diverged


def run_training_group(
    members: list[dict], x_test: np.ndarray, *, model_cfg: ModelConfig, train_cfg: TrainConfig,
    data_shape: tuple[int, ...], device: torch.device, log: Callable[[str], None] = print,
) -> list[dict[int, dict[str, float]]]:
    """Grouped `train.run_training`: members are dicts with x_train [n, D], seed and state_dir.

    Trains every member until each grid checkpoint exists in its state_dir and returns, per member,
    {step: probe losses}. Members with nothing missing are skipped; members resuming from different
    steps train as separate sub-groups. A diverged member does not stop the others: it raises
    TrainingDiverged, naming it, after every other member has finished.
    """
    check_supported(model_cfg, train_cfg)
    grid = checkpoint_grid(dataclasses.asdict(train_cfg))
    xv = torch.as_tensor(x_test, dtype=torch.float32, device=device).reshape(x_test.shape[0], *data_shape)
    with torch.random.fork_rng(devices=[]):  # the base only lends its structure; leave the global RNG alone
        base = build_denoiser(model_cfg, data_shape=data_shape).to(device)
    vp_sigmas = base.sigmas if model_cfg.parameterization == "ddpm" else None
    test_probe = make_probe(xv, size=train_cfg.probe_size, model_cfg=model_cfg, train_cfg=train_cfg,
                            vp_sigmas=vp_sigmas, tag="test")
    by_start: dict[int, list[int]] = {}
    sources: dict[int, Path | None] = {}
    for i, member in enumerate(members):
        label = f"[train-group] n={member['x_train'].shape[0]} seed={member['seed']}:"
        have = set(existing_steps(member["state_dir"]))
        if all(s in have for s in grid):
            log(f"{label} every checkpoint exists")
            discard_resume(member["state_dir"], grid[-1], log=lambda m, label=label: log(f"{label} {m}"))
            continue
        start, sources[i] = resume_point(member["state_dir"], grid, log=lambda m, label=label: log(f"{label} {m}"))
        by_start.setdefault(start, []).append(i)
    errors: list[str] = []
    with ResumeTrigger(train_cfg.resume_every_min).handling_signals() as trigger:
        for start, indices in sorted(by_start.items()):
            sub = [members[i] for i in indices]
            log(f"[train-group] training {len(sub)} members from step {start} to {grid[-1]} on {device}")
            state, data = _start_group(sub, [sources[i] for i in indices], start, model_cfg=model_cfg,
                                       train_cfg=train_cfg, data_shape=data_shape, device=device, log=log)
            runs = []
            for member, x in zip(sub, (data.x[m, : data.n[m]] for m in range(len(sub)))):
                probe = make_probe(x, size=train_cfg.probe_size, model_cfg=model_cfg, train_cfg=train_cfg,
                                   vp_sigmas=vp_sigmas, tag="train")
                runs.append(_Member(f"n={x.shape[0]} seed={member['seed']}", Path(member["state_dir"]),
                                    set(existing_steps(member["state_dir"])), probe))
            trigger.saved()  # the timer counts training time, not the loading above
            diverged = _train_group_until(state, data, runs, base=base, grid=grid, test_probe=test_probe,
                                          model_cfg=model_cfg, train_cfg=train_cfg, data_shape=data_shape,
                                          vp_sigmas=vp_sigmas, trigger=trigger, log=log)
            errors += [diverged[m] for m in sorted(diverged)]
            for m, member in enumerate(sub):
                if m not in diverged:
                    discard_resume(member["state_dir"], grid[-1],
                                   log=lambda line, label=runs[m].label: log(f"[train-group] {label}: {line}"))
    if errors:
        raise TrainingDiverged("; ".join(errors))
    out = []
    for member in members:
        out.append({step: dict(load_checkpoint(checkpoint_path(member["state_dir"], step))["metrics"])
                    for step in grid})
    return out


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    from diffmem.gpus import select_device

    parser = argparse.ArgumentParser(prog="python -m diffmem.grouped", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", nargs="+", required=True, help="training subsets (.npz), one per member")
    parser.add_argument("--seeds", nargs="+", type=int, required=True, help="seed of each member")
    parser.add_argument("--dataset", required=True, help="dataset (.npz) for the test probe")
    parser.add_argument("--model", required=True, help="model config slice (JSON or path)")
    parser.add_argument("--train-cfg", required=True, help="train config slice (JSON or path)")
    parser.add_argument("--state-roots", nargs="+", required=True, help="checkpoint folder of each member")
    parser.add_argument("--outs", nargs="+", required=True, help="train_metrics.nc of each member")
    args = parser.parse_args(argv)
    k = len(args.train)
    if not (len(args.seeds) == len(args.state_roots) == len(args.outs) == k):
        fail(f"--train, --seeds, --state-roots and --outs need one entry per member; got {k}, {len(args.seeds)}, "
             f"{len(args.state_roots)} and {len(args.outs)}")
    try:
        model_cfg = ModelConfig.from_dict(read_json_arg(args.model))
        train_cfg = TrainConfig.from_dict(read_json_arg(args.train_cfg))
        check_supported(model_cfg, train_cfg)
    except (ConfigError, NotImplementedError) as exc:
        fail(str(exc))
    torch.set_num_threads(train_cfg.threads)
    set_tf32(train_cfg.tf32)
    try:
        device, _gpu_lease = select_device(train_cfg.device)  # the lease holds the GPU until exit
    except RuntimeError as exc:
        fail(str(exc))
    test = load_dataset(args.dataset).test
    members, shapes = [], set()
    for path, seed, root in zip(args.train, args.seeds, args.state_roots):
        x_train, _, shape = load_train(path)
        data_shape = tuple(shape) if (shape and model_cfg.arch == "unet") else (x_train.shape[1],)
        shapes.add(data_shape)
        digest = trajectory_hash(model_cfg, train_cfg, x_train=x_train, seed=seed)
        members.append({"x_train": x_train, "seed": seed, "state_dir": Path(root) / digest, "digest": digest})
    if len(shapes) != 1:
        fail(f"members of a group need one data shape, got {sorted(shapes)}")
    print(f"[train-group] {k} members, n={[m['x_train'].shape[0] for m in members]} seeds={args.seeds} "
          f"device={device}", flush=True)
    try:
        metrics = run_training_group(members, test, model_cfg=model_cfg, train_cfg=train_cfg,
                                     data_shape=shapes.pop(), device=device, log=lambda m: print(m, flush=True))
    except (TrainingDiverged, CheckpointError) as exc:
        fail(str(exc))
    except TrainingInterrupted as exc:
        fail(str(exc), code=128 + exc.signum)  # the shell's convention for "killed by this signal"
    for member, member_metrics, out in zip(members, metrics, args.outs):
        ds = metrics_dataset(member_metrics, n=member["x_train"].shape[0], seed=member["seed"],
                             attrs={"state_dir": str(member["state_dir"]), "trajectory_hash": member["digest"]})
        atomic_to_netcdf(ds, out)
        print(f"[train-group] wrote {out}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
