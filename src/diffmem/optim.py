"""The optimizers of training, on stacked parameters: every tensor has a leading member axis [k, ...].

One model is a stack of one. Adam and SGD with momentum are written here once, elementwise, so each
member gets exactly the update torch.optim would give it alone (tests hold them to torch.optim bit for
bit): Adam through torch's fused kernel (`torch._fused_adam_`, what torch.optim.Adam(fused=True) calls)
where it exists, else the op sequence of torch.optim.Adam(foreach=True); SGD the sequence of
torch.optim.SGD(foreach=True). Calling the kernels directly also skips torch.optim's per-step Python
bookkeeping, which costs about as much as the fused update itself for the small models of this study.

The state layout: {parameter name: {"exp_avg", "exp_avg_sq"}} (adam) or {"momentum_buffer"} (sgd),
each [k, ...]; empty before the first step. `member_optimizer_state` and `stacked_optimizer_state`
convert to and from torch.optim's state_dict, the checkpoint format.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam defaults
ADAM_EPS = 1e-8
OPTIMIZERS = ("adam", "sgd")


@functools.cache  # asked at every step: the answer depends on the device only
def fused_adam(device: torch.device) -> bool:
    """Whether Adam runs as torch's fused kernel on this device (CPU and CUDA: one pass over the state
    instead of ~8 multi-tensor passes). torch < 2.4 has no CPU kernel; there, and on other devices,
    Adam runs `adam_update_`, the op sequence of torch.optim.Adam(foreach=True)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        supported = _get_fused_kernels_supported_devices()
    except ImportError:  # an older torch: CUDA only
        supported = ["cuda"]
    return device.type in ("cpu", "cuda") and device.type in supported


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
    # torch.full fills on the device; torch.tensor(step, device=cuda) would copy from the host and
    # synchronize the stream, i.e. stall the host once per training step
    steps = [torch.full((), float(step), dtype=torch.float32, device=params[0].device)] * len(params)
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


def param_groups(params, cfg) -> list[dict]:
    """torch.optim's `param_groups` for the train config (the checkpoint's format, as torch.optim writes it).

    Written out rather than read from a constructed torch.optim optimizer: constructing one imports
    torch._dynamo (~2.5 CPU-seconds per training process). `tests/test_optim.py` holds the dict to the one
    torch.optim writes, keys in order, so a torch release that changes it fails there.
    """
    params = list(params)
    if cfg.optimizer == "adam":
        fused = fused_adam(params[0].device)
        group = {"lr": cfg.lr, "betas": ADAM_BETAS, "eps": ADAM_EPS, "weight_decay": cfg.weight_decay,
                 "amsgrad": False, "maximize": False, "foreach": None if fused else True, "capturable": False,
                 "differentiable": False, "fused": True if fused else None, "decoupled_weight_decay": False}
    else:
        group = {"lr": cfg.lr, "momentum": cfg.momentum, "dampening": 0, "weight_decay": cfg.weight_decay,
                 "nesterov": False, "maximize": False, "foreach": True, "differentiable": False, "fused": None}
    return [{**group, "params": list(range(len(params)))}]


def member_optimizer_state(opt: dict[str, dict[str, torch.Tensor]], names: list[str], m: int, *,
                           step: int) -> dict[int, dict[str, torch.Tensor]]:
    """Member m's torch.optim `state` (keyed by parameter position) from the stacked state."""
    out = {}
    for i, name in enumerate(names):
        if name in opt:
            entry = {key: value[m].clone() for key, value in opt[name].items()}
            if "exp_avg" in entry:  # torch.optim.Adam keeps its step count per parameter, first
                entry = {"step": torch.tensor(float(step), dtype=torch.float32), **entry}
            out[i] = entry
    return out


def stacked_optimizer_state(states: list[dict], names: list[str], *, step: int,
                            device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    """Stack the members' torch.optim `state` dicts (all with state, or all empty) at training step `step`."""
    if not any(states):
        return {}
    if not all(states):
        raise ValueError("members of one stack must all have optimizer state, or none")
    opt = {}
    for i, name in enumerate(names):
        per_member = [st[i] for st in states]
        if "step" in per_member[0] and any(int(p["step"]) != step for p in per_member):
            raise ValueError(f"optimizer step of {name} differs from the training step {step}")
        opt[name] = {key: torch.stack([p[key] for p in per_member]).to(device)
                     for key in per_member[0] if key != "step"}
    return opt


@torch.no_grad()
def optimizer_step_(params: dict[str, torch.Tensor], grads: list[torch.Tensor],
                    opt: dict[str, dict[str, torch.Tensor]], cfg, *, step: int,
                    workspace: dict[str, list[torch.Tensor]]) -> None:
    """One update of every member (`step` counts it, 1 for the first); fills `opt` on the first step.

    `workspace` keeps scratch buffers between steps (fresh multi-MB temporaries cost page faults on CPU).
    """
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"train.optimizer={cfg.optimizer!r} is not implemented; choose from {', '.join(OPTIMIZERS)}")
    names = list(params)
    tensors = list(params.values())
    if cfg.grad_clip is not None:
        clip_grad_norm_per_member_(grads, cfg.grad_clip)
    if cfg.optimizer == "adam":
        if not opt:
            opt.update({n: {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)} for n, p in params.items()})
        moments = [[opt[n]["exp_avg"] for n in names], [opt[n]["exp_avg_sq"] for n in names]]
        if fused_adam(tensors[0].device):
            fused_adam_update_(tensors, grads, *moments, step=step, lr=cfg.lr, weight_decay=cfg.weight_decay)
            return
        if "denom" not in workspace:
            workspace["denom"] = [torch.empty_like(p) for p in tensors]

        def adam(p, g, m, v, d):
            adam_update_(p, g, m, v, step=step, lr=cfg.lr, weight_decay=cfg.weight_decay, denom=d)

        in_slabs(adam, [tensors, grads, *moments, workspace["denom"]])
        return

    def sgd(p, g, b):
        return sgd_update_(p, g, b, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    if opt:
        in_slabs(sgd, [tensors, grads, [opt[n]["momentum_buffer"] for n in names]])
    else:  # first step (the momentum buffers start as the gradients) or no momentum
        bufs = sgd(tensors, grads, None)
        if bufs is not None:
            opt.update({n: {"momentum_buffer": b} for n, b in zip(names, bufs)})
