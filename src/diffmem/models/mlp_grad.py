"""The default MLP's training step by hand: the loss and its gradient in one pass, without autograd.

`mlp_loss_and_grads(base, params, buffers, x0, sigma, noise)` returns what
`torch.autograd.grad(denoising_loss(...).mean(), params)` returns for one `MLP` (models/mlp.py)
behind either preconditioning (models/precond.py), computed with the same ATen kernels, in the same
order and with the same memory layouts as autograd's backward formulas, so the result is the same
bit for bit (tests/test_mlp_grad.py holds it to autograd on the module itself; any change to `MLP`,
the preconditioning or the loss that is not mirrored here fails that test).

It also takes a stack of k >= 2 members (models/stacked.py's layout), computing each member with the
kernels it gets alone (`_Layers`), so a grouped run trains as it does alone.
The engine calls it on CPU only (engine.make_step_loss), where it was measured.

Why: the digits MLP (width 128, batch 16) is launch-bound on CPU. The step here runs the forward's ~50
kernels, saving what the backward needs, then the backward's ~60 kernels directly (`torch.ops.aten`),
without autograd's graph, engine and views: 1.28x the model-steps/s of autograd for one model, 1.96x
for a stack of six (docs/benchmarks.md, "Training by hand").

The forward reuses the definitions every other path calls: the preconditioning coefficients and loss
weight of the wrapper (`coefficients`, `loss_weight`), `timestep_encoding`, and the kernels `F.linear`
and `F.layer_norm` call (addmm on weight.t(); native_layer_norm). The backward is the derivative of
exactly that forward:
- linear y = x W^T + b: dx = g W, dW = (g^T x) (autograd's column-major branch for the transposed
  weight), db = g summed over rows;
- silu and layer norm: ATen's own backward kernels;
- the loss l = mean_i w_i mean_j (D_ij - x0_ij)^2: dD = (((1 / B) w) / D_dim) (2 (D - x0)), in
  autograd's order of operations;
- a tensor used twice or more gets its gradients summed in the order autograd's engine delivers
  them (the residual stream: the skip path first; the noise embedding: the last block first).
"""

from __future__ import annotations

import torch
from torch import nn

from diffmem.models.mlp import MLP, timestep_encoding
from diffmem.models.precond import EDMPrecond, VPPrecond

aten = torch.ops.aten
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which MLP uses


def supports(base: nn.Module) -> bool:
    """Whether `base` is a preconditioned `MLP`, the network this module differentiates by hand."""
    return isinstance(base, (EDMPrecond, VPPrecond)) and type(getattr(base, "net", None)) is MLP


class _Layers:
    """The layers' forward kernels and their backward, for one model (`stacked=False`) or k >= 2 members.

    One model: the module's own calls (F.linear: addmm on weight.t(); F.layer_norm: native_layer_norm) and
    autograd's formulas for them. A stack: every member computed with the kernels it would get alone, so
    that a member trains in a stack as it does alone: batched matmuls whose per-member results are the
    single matmuls' (baddbmm / bmm, in the single path's layouts) and each member's own affine layer
    norm. (models/stacked.py's stacked MLP, which autograd differentiates, instead normalises all members
    at once and applies the scale and shift as two ops: one GPU kernel, different rounding.)
    """

    def __init__(self, stacked: bool) -> None:
        self.stacked = stacked

    def linear(self, x, weight, bias):
        if not self.stacked:
            return nn.functional.linear(x, weight, bias)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    def linear_back(self, g, x, weight, *, need_input=True):
        """(dx or None, dW, db) of y = linear(x, W, b) for upstream g (AddmmBackward0 on weight.t(): its
        column-major branch gives dW = g^T x; the bias gradient through sum_to)."""
        if not self.stacked:
            dx = g.mm(weight) if need_input else None
            return dx, g.t().mm(x), g.sum(0, keepdim=True).view(-1)
        dx = g.bmm(weight) if need_input else None
        return dx, g.transpose(1, 2).bmm(x), g.sum(1, keepdim=True).squeeze(1)

    def layer_norm(self, h, weight, bias):
        """(output, what layer_norm_back needs)."""
        width = h.shape[-1]
        if not self.stacked:
            out, mean, rstd = aten.native_layer_norm(h, [width], weight, bias, LAYER_NORM_EPS)
            return out, (h, mean, rstd)
        parts = [aten.native_layer_norm(h[m], [width], weight[m], bias[m], LAYER_NORM_EPS) for m in range(h.shape[0])]
        return torch.stack([part[0] for part in parts]), (h, [part[1] for part in parts], [part[2] for part in parts])

    def layer_norm_back(self, g, saved, weight, bias):
        """(dh, dweight, dbias)."""
        width = g.shape[-1]
        h, mean, rstd = saved
        if not self.stacked:
            return aten.native_layer_norm_backward(g, h, [width], mean, rstd, weight, bias, [True, True, True])
        parts = [aten.native_layer_norm_backward(g[m], h[m], [width], mean[m], rstd[m], weight[m], bias[m],
                                                 [True, True, True]) for m in range(g.shape[0])]
        return tuple(torch.stack([part[i] for part in parts]) for i in range(3))


@torch.no_grad()
def mlp_loss_and_grads(base: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                       x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor | None = None,
                       prefix: str = "net.") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(per-member mean losses [k], gradients in the order of `params`) of k >= 1 MLPs on one batch each.

    One model: its own tensors by `named_parameters` name, x0 [B, ...], sigma [B], noise; the loss is
    loss.denoising_loss averaged over the batch, returned as [1] (the engine's single-model stack). A
    stack (models/stacked.py): [k, ...] parameters and buffers, x0 [k, B, ...], sigma [k, B], and `mask`
    [k, B] of real rows or None, as the engine's `make_step_loss` reduces it.
    """
    p = {name[len(prefix):]: t for name, t in params.items()}
    depth = sum(1 for name in p if name.endswith(".fc1.weight"))
    stacked = sigma.ndim == 2
    if stacked and sigma.shape[0] < 2:
        raise ValueError("a stack of one runs unstacked: pass the member's own tensors")
    layers = _Layers(stacked)
    silu = nn.functional.silu
    lead = sigma.shape
    shape = x0.shape
    tail = (1,) * (x0.ndim - sigma.ndim)

    # ---- forward: loss.denoising_loss through precond.precondition and MLP.forward, keeping what the backward needs
    x = x0 + sigma.reshape(*lead, *tail) * noise
    c_skip, c_out, c_in, c_noise = base.coefficients(sigma.to(x.dtype))
    x_in = (c_in.reshape(*lead, *tail) * x).reshape(*lead, -1)
    enc = timestep_encoding(c_noise, buffers[f"{prefix}embed.freqs"])
    e1 = layers.linear(enc, p["emb_mlp.0.weight"], p["emb_mlp.0.bias"])
    a1 = silu(e1)
    e2 = layers.linear(a1, p["emb_mlp.2.weight"], p["emb_mlp.2.bias"])
    emb = silu(e2)
    h = layers.linear(x_in, p["inp.weight"], p["inp.bias"])
    saved = []
    for i in range(depth):
        b = f"blocks.{i}."
        ln, ln_saved = layers.layer_norm(h, p[b + "norm.weight"], p[b + "norm.bias"])
        a = silu(ln)
        z = (layers.linear(a, p[b + "fc1.weight"], p[b + "fc1.bias"])
             + layers.linear(emb, p[b + "emb.weight"], p[b + "emb.bias"]))
        sz = silu(z)
        saved.append((ln_saved, ln, a, z, sz))
        h = h + layers.linear(sz, p[b + "fc2.weight"], p[b + "fc2.bias"])
    oln, oln_saved = layers.layer_norm(h, p["out_norm.weight"], p["out_norm.bias"])
    oa = silu(oln)
    out_f = layers.linear(oa, p["out.weight"], p["out.bias"]).reshape(shape)
    c_out_r = c_out.reshape(*lead, *tail)
    out = c_out_r * out_f
    x0_hat = out + x if c_skip is None else c_skip.reshape(*lead, *tail) * x + out
    diff = x0_hat - x0
    err = diff.pow(2).reshape(*lead, -1).mean(dim=sigma.ndim)
    weight = base.loss_weight(sigma)
    per_sample = weight * err
    one = err.new_tensor(1.0)
    if not stacked:
        losses = per_sample.mean().unsqueeze(0)
        g_ps = one.expand(lead) / lead[0]  # MeanBackward0
    elif mask is None:
        losses = per_sample.mean(dim=1)
        g_ps = one.expand(lead[0]).unsqueeze(1).expand(lead) / lead[1]  # SumBackward0, then MeanBackward1
    else:
        count = mask.sum(dim=1)
        losses = (per_sample * mask).sum(dim=1) / count
        g_ps = (one.expand(lead[0]) / count).unsqueeze(1).expand(lead) * mask  # DivBackward0, SumBackward1, MulBackward0

    # ---- backward, in autograd's formulas and order
    g_err = g_ps * weight
    numel = diff.reshape(*lead, -1).shape[-1]
    g_sq = g_err.unsqueeze(-1).expand(*lead, numel) / numel
    g_diff = g_sq.reshape(shape) * (2.0 * diff.pow(1.0))
    g_f = (g_diff * c_out_r).reshape(*lead, -1)
    grads: dict[str, torch.Tensor] = {}

    g_oa, grads["out.weight"], grads["out.bias"] = layers.linear_back(g_f, oa, p["out.weight"])
    g_oln = aten.silu_backward(g_oa, oln)
    g_h, grads["out_norm.weight"], grads["out_norm.bias"] = layers.layer_norm_back(
        g_oln, oln_saved, p["out_norm.weight"], p["out_norm.bias"])
    g_emb = None
    for i in reversed(range(depth)):
        b = f"blocks.{i}."
        ln_saved, ln, a, z, sz = saved[i]
        g_sz, grads[b + "fc2.weight"], grads[b + "fc2.bias"] = layers.linear_back(g_h, sz, p[b + "fc2.weight"])
        g_z = aten.silu_backward(g_sz, z)
        g_e, grads[b + "emb.weight"], grads[b + "emb.bias"] = layers.linear_back(g_z, emb, p[b + "emb.weight"])
        g_emb = g_e if g_emb is None else g_emb + g_e
        g_a, grads[b + "fc1.weight"], grads[b + "fc1.bias"] = layers.linear_back(g_z, a, p[b + "fc1.weight"])
        g_ln = aten.silu_backward(g_a, ln)
        g_hln, grads[b + "norm.weight"], grads[b + "norm.bias"] = layers.layer_norm_back(
            g_ln, ln_saved, p[b + "norm.weight"], p[b + "norm.bias"])
        g_h = g_h + g_hln
    _, grads["inp.weight"], grads["inp.bias"] = layers.linear_back(g_h, x_in, p["inp.weight"], need_input=False)
    g_e2 = aten.silu_backward(g_emb, e2)
    g_a1, grads["emb_mlp.2.weight"], grads["emb_mlp.2.bias"] = layers.linear_back(g_e2, a1, p["emb_mlp.2.weight"])
    g_e1 = aten.silu_backward(g_a1, e1)
    _, grads["emb_mlp.0.weight"], grads["emb_mlp.0.bias"] = layers.linear_back(g_e1, enc, p["emb_mlp.0.weight"],
                                                                                need_input=False)
    return losses, [grads[name[len(prefix):]] for name in params]
