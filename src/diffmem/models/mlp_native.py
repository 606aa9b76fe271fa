"""The default MLP's training step in diffmem's own C kernel (native/mlp_step.c), for k members in one call.

`NativeMLPStep(base, params)` is bound to a stack's parameters ([k, ...] tensors, updated in place by
the optimizer, so their memory stays where it was) and is called like models/mlp_grad.py's
`mlp_loss_and_grads`: (per-member mean losses [k], gradients in the order of `params`). It computes the
same loss and gradient with other roundings: the C kernel keeps the activations feature-major, sums
in its own order and uses its own exp. What that changes in a run was measured (docs/benchmarks.md,
"The native kernel"); `tests/test_mlp_native.py` holds the gradients to autograd's within float32
tolerance.

Everything of the step but the batch draws runs in C, one member after another on the calling thread:
the noisy input, the preconditioning's coefficients and loss weight (models/precond.py's EDMPrecond and
VPPrecond, written out again in mlp_step_precond), the noise-level encoding (models/mlp.py's
`timestep_encoding`), the network, the loss and the backward; and, through `adam_` (engine.update_, for
Adam without gradient clipping), the optimizer's update. Only a padded stack's row weights (its mask over
its count) are made in torch. `train_steps` takes consecutive steps of a stack of one in one call, each
that step and that update, so bit for bit the steps taken one call at a time (engine.train_chunk, which
draws the steps' batches at once).

`NativeMLPForward` evaluates the network F(c_in x, c_noise) of one model, and `NativeDenoiser` the denoiser
D(x; sigma) around it (models/precond.py's `precondition`, in torch), for sampling (`sample.kernel`). mlp_step.c's
forward computes the time embedding once per noise level and carries the batch through the network in chunks of
columns; a row's output does not depend on the batch it is in. It equals torch's forward to float rounding
(tests/test_mlp_native.py); what that does to the samples is measured in docs/benchmarks.md ("Sampling in the
native kernel"). Under EDM's preconditioning, samplers.py's heun_sampler hands its whole loop to the denoiser's
`heun_steps`: mlp_step.c's mlp_heun takes a trajectory's steps in one call, the sampler's and `precondition`'s
operations in their order (the coefficients and encodings made by torch once per noise level, `heun_tables`), so
the samples are those of the loop bit for bit without a torch operation between network evaluations.
"""

from __future__ import annotations

import ctypes
import functools
import math

import numpy as np
import torch
from torch import nn

from diffmem.models import mlp_grad
from diffmem.models.mlp import MLP, timestep_encoding
from diffmem.models.precond import EDMPrecond, precondition
from diffmem.native import library
from diffmem.optim import ADAM_BETAS, ADAM_EPS

MAX_DEPTH = 64  # mlp_step.c's parameter tables


def parameter_names(depth: int) -> list[str]:
    """The network's parameter names (without the wrapper's prefix) in mlp_step.c's order."""
    names = ["emb_mlp.0.weight", "emb_mlp.0.bias", "emb_mlp.2.weight", "emb_mlp.2.bias", "inp.weight", "inp.bias"]
    for i in range(depth):
        names += [f"blocks.{i}.{part}" for part in ("norm.weight", "norm.bias", "fc1.weight", "fc1.bias",
                                                    "emb.weight", "emb.bias", "fc2.weight", "fc2.bias")]
    return names + ["out_norm.weight", "out_norm.bias", "out.weight", "out.bias"]


def supports(base: nn.Module) -> bool:
    """Whether `base` is a preconditioned `MLP` whose sizes the kernel takes (mlp_grad's networks)."""
    if not mlp_grad.supports(base):
        return False
    net: MLP = base.net
    width = net.inp.out_features
    return len(net.blocks) <= MAX_DEPTH and width % 8 == 0 and net.embed.freqs.shape[0] * 2 % 8 == 0


def _dims(net: MLP, k: int, batch: int, *, step: bool = True) -> tuple[torch.Tensor, ctypes._Pointer, torch.Tensor]:
    """mlp_step.c's sizes [k, B, B padded to 8, D, E, W, depth] (the tensor, to keep alive, and its pointer) and
    the scratch a call needs (a training step's, `step`, or the forward's)."""
    padded = -(-batch // 8) * 8
    dims = torch.tensor([k, batch, padded, net.inp.in_features, net.embed.freqs.shape[0] * 2, net.inp.out_features,
                         len(net.blocks)], dtype=torch.int64)
    pointer = ctypes.cast(dims.data_ptr(), ctypes.POINTER(ctypes.c_int64))
    size = library().mlp_step_precond_workspace if step else library().mlp_step_workspace
    return dims, pointer, torch.empty(int(size(pointer)), dtype=torch.float32)


def _pointers(tensors: list[torch.Tensor]) -> ctypes.Array:
    for t in tensors:
        if t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != "cpu":
            raise ValueError("the native kernel takes contiguous float32 CPU tensors")
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class NativeMLPStep:
    """Loss and gradients of a stack's k members through mlp_step.c (see the module docstring)."""

    def __init__(self, base: nn.Module, params: dict[str, torch.Tensor], *, prefix: str = "net.") -> None:
        if not supports(base):
            raise ValueError("the native kernel computes the preconditioned MLP (arch mlp) only")
        self.net = base.net
        self.lib = library()
        order = [prefix + name for name in parameter_names(len(self.net.blocks))]
        if sorted(order) != sorted(params):
            raise ValueError("the parameters are not the MLP's")
        self.names = order
        self.params = [params[name] for name in order]
        self.k = self.params[0].shape[0]
        self.numel = torch.tensor([t.numel() for t in self.params], dtype=torch.int64)
        self.moment_ptrs = None
        self.param_ptrs = _pointers(self.params)
        self.grads = {name: torch.empty_like(params[name]) for name in order}
        self.grad_ptrs = _pointers(list(self.grads.values()))
        self.out_order = list(params)
        # the preconditioning, computed in C (mlp_step_precond): EDM's sigma_data, or VP's log sigma_t grid
        if isinstance(base, EDMPrecond):
            self.kind, self.sigma_data, self.log_sigmas = 0, float(base.sigma_data), None
        else:
            self.kind, self.sigma_data = 1, 0.0
            self.log_sigmas = base.log_sigmas.to(torch.float64).contiguous()
        self.freqs = self.net.embed.freqs.expand(self.k, -1).contiguous()
        self.batch = None

    def _size(self, batch: int) -> None:
        if batch != self.batch:
            self.dims, self.dims_ptr, self.work = _dims(self.net, self.k, batch)
            self.train_work = None  # train_steps' scratch, made at its first call
            self.losses = torch.empty(self.k, dtype=torch.float32)
            self.batch = batch

    @torch.no_grad()
    def __call__(self, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                 mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x0, noise [k, B, ...], sigma [k, B], mask [k, B] or None -> (losses [k], gradients [k, ...] in `params` order)."""
        k, batch = sigma.shape
        if k != self.k:
            raise ValueError(f"a stack of {self.k} members got a batch for {k}")
        self._size(batch)
        rowscale = None if mask is None else (mask / mask.sum(dim=1, keepdim=True)).float().contiguous()
        x0, sigma, noise = (t.float().contiguous() for t in (x0, sigma, noise))
        self.lib.mlp_step_precond(
            self.dims_ptr, self.param_ptrs, self.grad_ptrs, x0.data_ptr(), sigma.data_ptr(), noise.data_ptr(),
            self.freqs.data_ptr(), self.kind, self.sigma_data, _ptr(self.log_sigmas),
            0 if self.log_sigmas is None else self.log_sigmas.shape[0], _ptr(rowscale), self.losses.data_ptr(),
            self.work.data_ptr())
        return self.losses.clone(), [self.grads[name] for name in self.out_order]


    def _moments(self, opt: dict[str, dict[str, torch.Tensor]]) -> None:
        """Fill `opt` with zero moments on the first step; bind the kernel to its moments."""
        if not opt:
            opt.update({name: {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                        for name, p in zip(self.names, self.params)})
        if self.moment_ptrs is None:
            self.moment_ptrs = (_pointers([opt[name]["exp_avg"] for name in self.names]),
                                _pointers([opt[name]["exp_avg_sq"] for name in self.names]))

    @torch.no_grad()
    def adam_(self, opt: dict[str, dict[str, torch.Tensor]], *, step: int, lr: float, weight_decay: float,
              betas: tuple[float, float] = ADAM_BETAS, eps: float = ADAM_EPS) -> None:
        """One Adam update of every member from the gradients of the last call, in C (mlp_step.c's adam_update):
        torch.optim.Adam's update as its fused CPU kernel computes it, to float rounding. `opt` is optim.py's
        state layout ({name: {"exp_avg", "exp_avg_sq"}}, [k, ...]), filled with zeros on the first step; `step`
        counts this update (1 for the first); its scalars are `adam_scalars`'."""
        self._moments(opt)
        step_size, bias_correction2_sqrt = adam_scalars(step, lr, betas)
        self.lib.adam_update(len(self.params), self.param_ptrs, self.grad_ptrs, *self.moment_ptrs, self.numel.data_ptr(),
                             betas[0], betas[1], eps, weight_decay, step_size, bias_correction2_sqrt)

    @torch.no_grad()
    def train_steps(self, x: torch.Tensor, idx: torch.Tensor | None, sigma: torch.Tensor, noise: torch.Tensor,
                    opt: dict[str, dict[str, torch.Tensor]], *, first_step: int, lr: float, weight_decay: float,
                    betas: tuple[float, float] = ADAM_BETAS, eps: float = ADAM_EPS) -> torch.Tensor:
        """S consecutive training steps of a stack of one, each `__call__` then `adam_` (mlp_step.c's
        mlp_train_steps: the same calls, one step after another, in C), so the numbers are exactly those of the
        steps taken one at a time. x [n, D]: the training set; idx [S, B] (int64): each step's rows, or None for
        the rows 0 .. B - 1 (the full set); sigma [S, B]; noise [S, B, D], each step's [B, D] contiguous
        (the steps may be apart: a view into a larger draw); `first_step` counts the first update (as `adam_`'s
        `step`). Returns the losses [S]."""
        if self.k != 1:
            raise ValueError("train_steps trains a stack of one")
        steps, batch = sigma.shape
        self._size(batch)
        self._moments(opt)
        if x.dtype != torch.float32 or not x.is_contiguous() or sigma.dtype != torch.float32 or not sigma.is_contiguous():
            raise ValueError("train_steps takes contiguous float32 data and noise levels")
        if noise.dtype != torch.float32 or noise.stride()[1:] != (noise.shape[2], 1):
            raise ValueError("train_steps takes each step's noise [B, D] contiguous in float32")
        if idx is not None and (idx.dtype != torch.int64 or not idx.is_contiguous() or idx.shape != sigma.shape):
            raise ValueError("train_steps takes the rows idx [S, B] as contiguous int64")
        if self.train_work is None:
            self.train_work = torch.empty(int(self.lib.mlp_train_steps_workspace(self.dims_ptr)), dtype=torch.float32)
        scalars = torch.tensor([adam_scalars(first_step + s, lr, betas) for s in range(steps)], dtype=torch.float64)
        step_size, bias_correction2_sqrt = scalars[:, 0].contiguous(), scalars[:, 1].contiguous()
        losses = torch.empty(steps, dtype=torch.float32)
        self.lib.mlp_train_steps(
            self.dims_ptr, self.param_ptrs, self.grad_ptrs, *self.moment_ptrs, x.data_ptr(), _ptr(idx),
            sigma.data_ptr(), noise.data_ptr(), noise.stride()[0], self.freqs.data_ptr(), self.kind, self.sigma_data,
            _ptr(self.log_sigmas), 0 if self.log_sigmas is None else self.log_sigmas.shape[0], betas[0], betas[1], eps,
            weight_decay, step_size.data_ptr(), bias_correction2_sqrt.data_ptr(), steps, losses.data_ptr(),
            self.train_work.data_ptr())
        return losses


def adam_scalars(step: int, lr: float, betas: tuple[float, float]) -> tuple[float, float]:
    """Adam's step size and the square root of its second bias correction for update `step` (1 for the first), in
    double from the step count as a float32, the tensor torch.optim keeps it in."""
    step_f = float(np.float32(step))
    return lr / (1 - betas[0]**step_f), math.sqrt(1 - betas[1]**step_f)


class NativeMLPForward:
    """F(c_in x, c_noise) of one preconditioned MLP through mlp_step.c's forward (sampling); bound to the model's
    parameters as they are (it reads their memory at every call)."""

    def __init__(self, base: nn.Module, *, prefix: str = "net.") -> None:
        if not supports(base):
            raise ValueError("the native kernel computes the preconditioned MLP (arch mlp) only")
        self.net = base.net
        self.lib = library()
        named = dict(base.named_parameters())
        self.params = [named[prefix + name].detach().contiguous() for name in parameter_names(len(self.net.blocks))]
        self.param_ptrs = _pointers(self.params)
        self.batch = None

    def bind_batch(self, batch: int) -> None:
        """Sizes and scratch for batches of `batch` rows (made again only when the batch size changes)."""
        if batch != self.batch:
            self.dims, self.dims_ptr, self.work = _dims(self.net, 1, batch, step=False)
            self.batch = batch

    @torch.no_grad()
    def __call__(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        batch = x_in.shape[0]
        self.bind_batch(batch)
        rows = x_in.reshape(batch, -1).float().contiguous()
        enc = encode(c_noise, self.net.embed.freqs)
        out = torch.empty_like(rows)
        self.lib.mlp_forward(self.dims_ptr, self.param_ptrs, rows.data_ptr(), enc.data_ptr(), out.data_ptr(),
                             self.work.data_ptr())
        return out.reshape(x_in.shape)


def encode(c_noise: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """[B, E] rows of `timestep_encoding` for c_noise [B], computed once per run of equal levels (a sampler's batch
    has one) and given to each of its rows."""
    levels, level_of_row = torch.unique_consecutive(c_noise, return_inverse=True)
    return timestep_encoding(levels, freqs)[level_of_row].contiguous()


@functools.lru_cache(maxsize=8)
def heun_tables(sigma_data: float, freqs: tuple[float, ...], sigmas: tuple[float, ...],
                batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mlp_heun's tables for a batch of `batch` rows: coef [N, 3, B] (c_skip, c_out, c_in of each row) and enc
    [N, B, E] at each noise level sigmas[i] > 0, made as heun_sampler's call of NativeDenoiser makes them: sigma
    the double level times a row of ones in float32, EDMPrecond's `coefficients` on it, `encode` of its c_noise.
    They depend on the levels and the batch only, so a run's checkpoints share them (kept for 8 batch sizes)."""
    precond = EDMPrecond(nn.Identity(), sigma_data=sigma_data)
    freqs_t = torch.tensor(freqs, dtype=torch.float32)
    ones = torch.ones(batch, dtype=torch.float64)
    coef, enc = [], []
    for s in torch.tensor(sigmas, dtype=torch.float64):
        if not s > 0:
            break
        c_skip, c_out, c_in, c_noise = precond.coefficients((s * ones).float())
        coef.append(torch.stack([c_skip, c_out, c_in]))
        enc.append(encode(c_noise, freqs_t))
    return torch.stack(coef).contiguous(), torch.stack(enc).contiguous()


class NativeDenoiser:
    """`denoiser(x, sigma) -> x0_hat` of one preconditioned MLP whose network runs in mlp_step.c's forward: the
    preconditioning is `precondition`'s, in torch, as for the module; F is `NativeMLPForward`.

    Under EDM's preconditioning it also offers `heun_steps`, which samplers.py's heun_sampler hands its whole loop:
    mlp_step.c's mlp_heun takes every step of the trajectory in one call, the sampler's and `precondition`'s
    operations in their order, so the same samples bit for bit as the loop over this denoiser (tested)."""

    def __init__(self, base: nn.Module) -> None:
        self.base = base
        self.forward = NativeMLPForward(base)
        if hasattr(base, "sigmas"):  # DDPM: the samplers read the timestep schedule
            self.sigmas = base.sigmas
        if isinstance(base, EDMPrecond):
            self.heun_steps = self._heun_steps

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return precondition(self.base, self.forward, x, sigma)

    @torch.no_grad()
    def _heun_steps(self, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        """heun_sampler's steps from x [B, ...] (double: the latents times sigmas[0]) through the decreasing levels
        `sigmas` (double, ending with 0); returns x at the last level (double)."""
        if x.dtype != torch.float64 or x.device.type != "cpu" or sigmas.dtype != torch.float64:
            raise ValueError("heun_steps takes double CPU samples and noise levels")
        batch, forward = x.shape[0], self.forward
        coef, enc = heun_tables(self.base.sigma_data, tuple(forward.net.embed.freqs.tolist()),
                                tuple(sigmas.tolist()), batch)
        forward.bind_batch(batch)
        rows = x.reshape(batch, -1).contiguous().clone()  # [B, D], stepped in place
        levels = sigmas.contiguous()
        x_next, d, d2 = (torch.empty_like(rows) for _ in range(3))
        xin, out = (torch.empty(rows.shape, dtype=torch.float32) for _ in range(2))
        _bind_heun(forward.lib)(
            forward.dims_ptr, forward.param_ptrs, rows.data_ptr(), levels.shape[0] - 1, levels.data_ptr(),
            coef.data_ptr(), enc.data_ptr(), x_next.data_ptr(), d.data_ptr(), d2.data_ptr(), xin.data_ptr(),
            out.data_ptr(), forward.work.data_ptr())
        return rows.reshape(x.shape)


@functools.cache
def _bind_heun(lib: ctypes.CDLL):
    """lib.mlp_heun with its argument types (dims, params, x, num_steps, sigmas, coef, enc and six scratch)."""
    vp = ctypes.c_void_p
    lib.mlp_heun.argtypes = [ctypes.POINTER(ctypes.c_int64), vp, vp, ctypes.c_int64] + [vp] * 9
    lib.mlp_heun.restype = None
    return lib.mlp_heun
