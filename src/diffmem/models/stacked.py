"""A stack of k denoisers of one architecture, evaluated as one computation: the training engine's model.

Parameters are stacked along a leading member axis ([k, ...], `torch.func.stack_module_state`
layout); `StackedDenoiser(base, params, buffers)` is called as `denoiser(x [k, B, ...], sigma [k, B])`
and has the base's `loss_weight`, so `loss.denoising_loss` serves one model and k alike.

- The MLPs (models/mlp.py: `MLP`, the default and most used network, and `TimeMLP`) are written out
  here on the stacked weights (`stacked_mlp`, `stacked_time_mlp`): for k > 1 each nn.Linear becomes
  one batched matmul (`baddbmm`); for k = 1 every layer calls the kernel the module itself calls
  (F.linear, F.layer_norm), so one model trains bit for bit as the plain module would
  (tests/test_engine.py holds it to a plain torch loop), without nn.Module and functional_call
  overhead (~0.5 ms per call, ~10 % of a small MLP's step).
- Any other network (the U-Net, the linear net) runs its module through `functional_call`: directly
  for k = 1, under `torch.vmap` for k > 1 (a Linear becomes a batched matmul, a conv a grouped conv).
- The preconditioning is models/precond.py's `precondition`, the function the modules call.
- A U-Net with dropout in training mode draws each member's masks from that member's generator
  (`generators`, the engine's per-run streams); k > 1 members then run one call each.
Members are independent: no op mixes the member axis, so the gradient of the sum of per-member
losses with respect to member m's parameters is member m's own gradient.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from diffmem.models.mlp import MLP, TimeMLP, timestep_encoding
from diffmem.models.precond import EDMPrecond, VPPrecond, precondition
from diffmem.models.unet import active_dropout, dropout_drawing_from


def _linear(p: dict, name: str, h: torch.Tensor) -> torch.Tensor:
    """nn.Linear `name`: one model's weights [out, in] on h [B, in], or k members' [k, out, in] on h [k, B, in]."""
    weight, bias = p[f"{name}.weight"], p[f"{name}.bias"]
    if weight.ndim == 2:  # one model, unstacked: the module's own call
        return nn.functional.linear(h, weight, bias)
    if h.shape[0] == 1:  # a stack of one (views of a larger stack): the module's kernel (addmm)
        return nn.functional.linear(h.squeeze(0), weight.squeeze(0), bias.squeeze(0)).unsqueeze(0)
    return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))


def _layer_norm(p: dict, name: str, h: torch.Tensor) -> torch.Tensor:
    """nn.LayerNorm `name` (default eps), unstacked or stacked as `_linear`."""
    weight, bias = p[f"{name}.weight"], p[f"{name}.bias"]
    if weight.ndim == 1:
        return nn.functional.layer_norm(h, h.shape[-1:], weight, bias)
    if h.shape[0] == 1:
        return nn.functional.layer_norm(h.squeeze(0), h.shape[-1:], weight.squeeze(0), bias.squeeze(0)).unsqueeze(0)
    out = nn.functional.layer_norm(h, h.shape[-1:])
    return out * weight.unsqueeze(1) + bias.unsqueeze(1)


def _own(params: dict, prefix: str) -> dict:
    """The network's own tensors, keyed without the wrapper's prefix ("net.")."""
    return {name[len(prefix):]: t for name, t in params.items() if name.startswith(prefix)}


def _learned_embedding(p: dict, freqs: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
    """models/mlp.py's MLP noise-level embedding, silu(emb_mlp(FourierEmbedding(c_noise))): [k, B, W] or [B, W]."""
    silu = nn.functional.silu
    return silu(_linear(p, "emb_mlp.2", silu(_linear(p, "emb_mlp.0", timestep_encoding(c_noise, freqs)))))


def stacked_mlp(params: dict, buffers: dict, x_in: torch.Tensor, c_noise: torch.Tensor, *, depth: int,
                prefix: str = "net.") -> torch.Tensor:
    """models/mlp.py's MLP.forward for every member at once: x_in [k, B, D], c_noise [k, B] -> [k, B, D];
    or, with unstacked parameters (one model), x_in [B, D], c_noise [B] -> [B, D].

    The same layers in the same order as the module; `tests/test_engine.py` checks it against the
    module, exactly for one model.
    """
    silu = nn.functional.silu
    p = _own(params, prefix)
    h = _linear(p, "inp", x_in)
    emb = _learned_embedding(p, buffers[f"{prefix}embed.freqs"], c_noise)
    for i in range(depth):
        z = _linear(p, f"blocks.{i}.fc1", silu(_layer_norm(p, f"blocks.{i}.norm", h)))
        z = z + _linear(p, f"blocks.{i}.emb", emb)
        h = h + _linear(p, f"blocks.{i}.fc2", silu(z))
    return _linear(p, "out", silu(_layer_norm(p, "out_norm", h)))


def stacked_time_mlp(params: dict, buffers: dict, x_in: torch.Tensor, c_noise: torch.Tensor, *, depth: int,
                     prefix: str = "net.") -> torch.Tensor:
    """models/mlp.py's TimeMLP.forward, stacked or unstacked as `stacked_mlp`."""
    p = _own(params, prefix)
    learned = "emb_mlp.0.weight" in p  # arch time_mlp_emb
    if learned:  # MLP's learned embedding, projected in every block
        t = _learned_embedding(p, buffers[f"{prefix}embed.freqs"], c_noise)
    else:
        t = timestep_encoding(c_noise, buffers[f"{prefix}freqs"])  # [k, B, W] or [B, W]
    h = _linear(p, "inp", x_in)
    for i in range(depth):
        ti = _linear(p, f"blocks.{i}.emb", t) if learned else t
        z = _linear(p, f"blocks.{i}.fc2", nn.functional.gelu(_linear(p, f"blocks.{i}.fc1", h + ti)))
        h = _layer_norm(p, f"blocks.{i}.norm", h + z)
    return _linear(p, "out", h)


# the networks written out above: module class -> its function of (params, buffers, x_in, c_noise, depth=)
FUNCTIONAL_NETS = {MLP: stacked_mlp, TimeMLP: stacked_time_mlp}


class StackedDenoiser:
    """`denoiser(x [k, B, ...], sigma [k, B]) -> x0_hat` of k members of `base`'s architecture.

    `params` and `buffers` map the base's names to [k, ...] tensors; with `stacked=False` they are
    one model's own tensors and the call takes x [B, ...], sigma [B], as the module does (the
    engine's path for a single run: no member axis, so no per-layer reshaping). `base` only lends its
    structure (and its `loss_weight` and preconditioning coefficients); its own weights are never used.
    """

    def __init__(self, base: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], *,
                 stacked: bool = True, generators: list[torch.Generator] | None = None) -> None:
        self.base, self.params, self.buffers, self.stacked = base, params, buffers, stacked
        net = getattr(base, "net", None) if isinstance(base, (EDMPrecond, VPPrecond)) else None
        self.functional = FUNCTIONAL_NETS.get(type(net))
        self.depth = len(net.blocks) if self.functional is not None else None
        # each member's dropout masks come from its own generator (models/unet.py ChannelDropout); the MLPs
        # written out above have no dropout, so their every-step construction skips the module walk
        self.generators = (generators if generators and self.functional is None and active_dropout(base)
                           else None)

    def net(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:  # [k, B, ...], [k, B] or [B, ...], [B]
        lead = c_noise.ndim
        flat = x_in.reshape(*x_in.shape[:lead], -1)
        return self.functional(self.params, self.buffers, flat, c_noise, depth=self.depth).reshape(x_in.shape)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.functional is not None:
            return precondition(self.base, self.net, x, sigma)
        if not self.stacked:
            if self.generators is not None:
                with dropout_drawing_from(self.base, self.generators[0]):
                    return functional_call(self.base, (self.params, self.buffers), (x, sigma))
            return functional_call(self.base, (self.params, self.buffers), (x, sigma))
        if x.shape[0] == 1:
            return self.member(0)(x.squeeze(0), sigma.squeeze(0)).unsqueeze(0)
        if self.generators is not None:  # random masks per member: one call each (vmap draws no per-member masks)
            return torch.stack([self.member(m)(x[m], sigma[m]) for m in range(x.shape[0])])
        return torch.vmap(self._member)(self.params, self.buffers, x, sigma)

    def _member(self, params: dict, buffers: dict, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x, sigma))

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.base.loss_weight(sigma)

    def member(self, m: int) -> StackedDenoiser:
        """Member m alone, unstacked (views, no copy): called with x [B, ...], sigma [B]."""
        if not self.stacked:
            return self
        return StackedDenoiser(self.base, {n: t[m] for n, t in self.params.items()},
                               {n: t[m] for n, t in self.buffers.items()}, stacked=False,
                               generators=None if self.generators is None else [self.generators[m]])


def stack_modules(modules: list[nn.Module]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(params, buffers) of `modules` stacked along a new leading axis; params are fresh leaves."""
    params = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in modules]).requires_grad_()
              for name, _ in modules[0].named_parameters()}
    buffers = {name: torch.stack([dict(m.named_buffers())[name] for m in modules])
               for name, _ in modules[0].named_buffers()}
    return params, buffers


def unstack_state_dict(base: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                       m: int) -> dict:
    """Member m's `state_dict()`, with the keys, order and metadata `base.state_dict()` has."""
    sd = base.state_dict()
    for key in sd:
        sd[key] = (params[key] if key in params else buffers[key])[m].detach().clone()
    return sd


