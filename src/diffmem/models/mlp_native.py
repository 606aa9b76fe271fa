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
its count) are made in torch.

`NativeMLPForward` evaluates the network F(c_in x, c_noise) of one model for sampling.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import torch
from torch import nn

from diffmem.models import mlp_grad
from diffmem.models.mlp import MLP, timestep_encoding
from diffmem.models.precond import EDMPrecond
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


    @torch.no_grad()
    def adam_(self, opt: dict[str, dict[str, torch.Tensor]], *, step: int, lr: float, weight_decay: float,
              betas: tuple[float, float] = ADAM_BETAS, eps: float = ADAM_EPS) -> None:
        """One Adam update of every member from the gradients of the last call, in C (mlp_step.c's adam_update):
        torch.optim.Adam's update as its fused CPU kernel computes it, to float rounding. `opt` is optim.py's
        state layout ({name: {"exp_avg", "exp_avg_sq"}}, [k, ...]), filled with zeros on the first step; `step`
        counts this update (1 for the first), a float32 as torch.optim keeps it; the bias corrections in double."""
        if not opt:
            opt.update({name: {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                        for name, p in zip(self.names, self.params)})
        if self.moment_ptrs is None:
            self.moment_ptrs = (_pointers([opt[name]["exp_avg"] for name in self.names]),
                                _pointers([opt[name]["exp_avg_sq"] for name in self.names]))
        step_f = float(np.float32(step))  # torch.optim's step count is a float32 tensor
        beta1, beta2 = betas
        step_size = lr / (1 - beta1**step_f)
        bias_correction2_sqrt = math.sqrt(1 - beta2**step_f)
        self.lib.adam_update(len(self.params), self.param_ptrs, self.grad_ptrs, *self.moment_ptrs, self.numel.data_ptr(),
                             beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt)


class NativeMLPForward:
    """F(c_in x, c_noise) of one preconditioned MLP through mlp_step.c's forward (sampling)."""

    def __init__(self, base: nn.Module, *, prefix: str = "net.") -> None:
        if not supports(base):
            raise ValueError("the native kernel computes the preconditioned MLP (arch mlp) only")
        self.net = base.net
        self.lib = library()
        named = dict(base.named_parameters())
        self.params = [named[prefix + name].detach().contiguous() for name in parameter_names(len(self.net.blocks))]
        self.param_ptrs = _pointers(self.params)
        self.batch = None

    @torch.no_grad()
    def __call__(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        batch = x_in.shape[0]
        if batch != self.batch:
            self.dims, self.dims_ptr, self.work = _dims(self.net, 1, batch, step=False)
            self.batch = batch
        rows = x_in.reshape(batch, -1).float().contiguous()
        enc = timestep_encoding(c_noise, self.net.embed.freqs).contiguous()
        out = torch.empty_like(rows)
        self.lib.mlp_forward(self.dims_ptr, self.param_ptrs, rows.data_ptr(), enc.data_ptr(), out.data_ptr(),
                             self.work.data_ptr())
        return out.reshape(x_in.shape)
