"""Residual MLPs for flat data, called by a preconditioning wrapper as `net(x_in, c_noise) -> F`.

- `MLP` (arch mlp, the default): pre-norm residual blocks conditioned by a learned embedding of the
  noise level (Fourier features, a two-layer MLP, a projection in every block).
- `TimeMLP` (arch time_mlp): the network of arXiv 2505.17638's synthetic runs, post-norm blocks with
  a fixed sinusoidal timestep encoding added at every block and no learned time embedding; arch
  time_mlp_emb, an ablation, adds `MLP`'s learned embedding there instead.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FourierEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar noise level (fixed log-spaced frequencies, as in DDPM)."""

    def __init__(self, dim: int, max_period: float = 10_000.0) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:  # [B] -> [B, dim]; c_noise is O(1000): see precond.py
        return timestep_encoding(c_noise, self.freqs)


class ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # [B, W], [B, W]
        z = self.fc1(nn.functional.silu(self.norm(h))) + self.emb(emb)
        return h + self.fc2(nn.functional.silu(z))


class MLP(nn.Module):
    """x_in [B, D], c_noise [B] -> [B, D] through `depth` residual blocks of `width` units."""

    def __init__(self, *, dim: int, width: int = 256, depth: int = 3, emb_dim: int = 64) -> None:
        super().__init__()
        self.embed = FourierEmbedding(emb_dim)
        self.emb_mlp = nn.Sequential(nn.Linear(emb_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList([ResBlock(width) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        shape = x_in.shape
        h = self.inp(x_in.reshape(shape[0], -1))  # [B, W]
        emb = nn.functional.silu(self.emb_mlp(self.embed(c_noise)))  # [B, W]
        for block in self.blocks:
            h = block(h, emb)
        return self.out(nn.functional.silu(self.out_norm(h))).reshape(shape)


def encoding_frequencies(width: int, *, min_freq: float = 1e-4) -> torch.Tensor:
    """The [width / 2] frequencies f_j = min_freq^(2j / width) of `TimeMLP`'s timestep encoding."""
    if width % 2:
        raise ValueError(f"time_mlp needs an even width (cos/sin pairs); got {width}")
    return (min_freq ** (2 * torch.arange(width // 2, dtype=torch.float64) / width)).float()


def timestep_encoding(c_noise: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """[..., B, width]: cos(c_noise f_j) in column j, sin(c_noise f_j) in column width / 2 + j.

    c_noise [B] with freqs [width / 2] (one model), or c_noise [k, B] with freqs [k, width / 2] (a stack).
    `FourierEmbedding` and `TimeMLP`'s PE are both this, with their own frequencies.
    """
    arg = c_noise.float().unsqueeze(-1) * freqs.unsqueeze(-2)
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


class TimeBlock(nn.Module):
    def __init__(self, width: int, *, learned: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        if learned:  # time_mlp_emb: this block's projection of the learned embedding
            self.emb = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # [B, W]; t: PE, or the learned embedding
        if hasattr(self, "emb"):
            t = self.emb(t)
        return self.norm(h + self.fc2(nn.functional.gelu(self.fc1(h + t))))


class TimeMLP(nn.Module):
    """The network of arXiv 2505.17638's synthetic (GMM) runs: x_in [B, D], c_noise [B] -> [B, D].

    Their `TinyModels.SimpleTimeModel(d, d_model, n_blocks=3)`: a linear map in, `depth` blocks
    h <- LayerNorm(h + W2 gelu(W1 (h + PE(t)))), a linear map out. The timestep enters only through
    the fixed sinusoidal encoding PE added at every block; there is no learned time embedding. PE has
    the values of their PositionalEncoding (cos(t f_j) and sin(t f_j), f_j = 1e-4^(2j / width)) with
    the columns ordered [all cos | all sin] where theirs interleave cos and sin: a fixed relabelling
    of the hidden units, which changes neither the function class nor the distribution of the
    initial weights (every layer's init is i.i.d. per entry), and makes PE two contiguous blocks
    instead of a strided interleave. They look PE up at integer DDPM steps; here t is the
    preconditioning's c_noise (the continuous timestep for ddpm, 250 ln sigma for edm), so it is
    computed, not looked up. At width 128, depth 3 and D = 8 it has their 102,024 parameters.

    With `emb_dim` set (arch time_mlp_emb, an ablation), PE is replaced by the learned time
    embedding of diffmem's `MLP`: Fourier features of c_noise, a two-layer MLP (emb_dim -> width ->
    width, SiLU between and after), and a linear projection in every block, added where PE is.
    """

    def __init__(self, *, dim: int, width: int = 128, depth: int = 3, emb_dim: int | None = None) -> None:
        super().__init__()
        learned = emb_dim is not None
        if learned:
            self.embed = FourierEmbedding(emb_dim)
            self.emb_mlp = nn.Sequential(nn.Linear(emb_dim, width), nn.SiLU(), nn.Linear(width, width))
        else:
            self.register_buffer("freqs", encoding_frequencies(width), persistent=False)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList([TimeBlock(width, learned=learned) for _ in range(depth)])
        self.out = nn.Linear(width, dim)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        shape = x_in.shape
        if hasattr(self, "emb_mlp"):
            t = nn.functional.silu(self.emb_mlp(self.embed(c_noise)))  # [B, W]
        else:
            t = timestep_encoding(c_noise, self.freqs)  # [B, W]
        h = self.inp(x_in.reshape(shape[0], -1))
        for block in self.blocks:
            h = block(h, t)
        return self.out(h).reshape(shape)
