"""Small DDPM-style U-Net raw network for image-shaped data.

This is the network of Bonnaire, Urfin, Biroli & Mézard, "Why Diffusion Models Don't Memorize: The
Role of Implicit Dynamical Regularization in Training" (arXiv 2505.17638), which follows the DDPM
U-Net of Ho et al. 2020 (arXiv 2006.11239) at a reduced size; the base width W is the knob that
sets the number of parameters (W in {8, ..., 64}, roughly 0.26 M to 16 M).

Architecture (defaults: channel_mult=(1, 2, 4), num_res_blocks=2, attn_levels=(1, 2)):

- noise embedding: sinusoidal features of the scalar c_noise (emb_dim of them) -> Linear -> SiLU ->
  Linear, giving a vector of size 4W that every residual block adds (through its own SiLU -> Linear)
  to its hidden channels after the first convolution;
- residual block: GroupNorm -> SiLU -> conv3x3 -> (+ embedding) -> GroupNorm -> SiLU -> dropout ->
  conv3x3, plus a 1x1 conv on the skip path when the channel count changes; the dropout is channel
  dropout (the authors' nn.Dropout2d) drawing its masks from an attached generator (`ChannelDropout`);
- encoder: conv3x3 to W channels, then per level l (channels W * channel_mult[l]) num_res_blocks
  residual blocks, each followed by single-head self-attention if l is in attn_levels, and a
  stride-2 conv3x3 downsampling between levels (32 -> 16 -> 8, or 8 -> 4 -> 2 for sklearn digits);
- middle: residual block, self-attention, residual block at the coarsest resolution;
- decoder: per level, coarsest first, num_res_blocks + 1 residual blocks, each taking the matching
  encoder activation concatenated on the channel axis (+ attention on attn_levels), and nearest
  upsampling followed by conv3x3 between levels;
- output: GroupNorm -> SiLU -> conv3x3 back to in_channels, with a zero-initialised weight and bias
  so that the network starts as F = 0 (the gradient of that weight is not zero, so it trains).

GroupNorm uses the largest group count <= min(32, channels // 4) that divides the channels, so that
widths as small as 8 work. c_noise is whatever the preconditioner passes (250 ln sigma for EDM, the
timestep index in [0, 1000) for VP): the sinusoids use DDPM's max period 10,000, which suits O(1000)
inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters (trainable or not) of a module."""
    return sum(p.numel() for p in module.parameters())


def _groups(channels: int) -> int:
    g = max(1, min(32, channels // 4))
    while channels % g:
        g -= 1
    return g


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_groups(channels), channels)


def timestep_embedding(c_noise: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features [B] -> [B, dim] (dim even) with log-spaced frequencies, as in DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=c_noise.device) / half)
    arg = c_noise.float()[:, None] * freqs[None, :]  # [B, half]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


class ChannelDropout(nn.Module):
    """torch's Dropout2d (whole channels zeroed with probability p, the rest scaled by 1 / (1 - p)) in
    training mode, drawing its masks from `self.generator` when one is attached (`dropout_drawing_from`),
    else from the global RNG. The training engine attaches each run's own random stream, so a run's
    masks do not depend on what else trains in the process and a resumed run draws the same masks."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> same
        if not self.training or self.p == 0.0:
            return x
        u = torch.rand((*x.shape[:2], *([1] * (x.ndim - 2))), generator=self.generator, device=x.device)
        return x * ((u >= self.p).to(x.dtype) / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def active_dropout(module: nn.Module) -> list[ChannelDropout]:
    """The module's ChannelDropout layers that draw masks now (training mode, p > 0)."""
    return [m for m in module.modules() if isinstance(m, ChannelDropout) and m.training and m.p > 0.0]


@contextmanager
def dropout_drawing_from(module: nn.Module, generator: torch.Generator | None) -> Iterator[None]:
    """Within the block, every ChannelDropout of `module` draws its masks from `generator`."""
    layers = [m for m in module.modules() if isinstance(m, ChannelDropout)]
    for layer in layers:
        layer.generator = generator
    try:
        yield
    finally:
        for layer in layers:
            layer.generator = None


class ResBlock(nn.Module):
    """[B, c_in, H, W], emb [B, E] -> [B, c_out, H, W]."""

    def __init__(self, c_in: int, c_out: int, emb_ch: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_ch, c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = ChannelDropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # [B, c_out, H, W]
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> same
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(2, 3).unbind(1)  # [B, HW, C]
        out = F.scaled_dot_product_attention(q, k, v)  # [B, HW, C]
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C, H/2, W/2]
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C, 2H, 2W]
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """A residual block optionally followed by self-attention."""

    def __init__(self, c_in: int, c_out: int, emb_ch: int, dropout: float, attn: bool) -> None:
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_ch, dropout)
        self.attn = Attention(c_out) if attn else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, emb))


class UNet(nn.Module):
    """Raw network `net(x_in [B, C, H, W], c_noise [B]) -> [B, C, H, W]`; see the module docstring.

    `generator`, when given, re-draws every conv/linear weight from it (PyTorch's default uniform
    scheme) so that initialisation does not touch or depend on the global RNG.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        width: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 4),
        num_res_blocks: int = 2,
        attn_levels: tuple[int, ...] = (1, 2),
        emb_dim: int | None = None,
        dropout: float = 0.0,
        image_size: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        emb_dim = width if emb_dim is None else emb_dim
        n_levels = len(channel_mult)
        if emb_dim < 2 or emb_dim % 2:
            raise ValueError(f"emb_dim must be even and >= 2, got {emb_dim}")
        if n_levels < 1 or num_res_blocks < 1 or width < 1:
            raise ValueError("need width >= 1, num_res_blocks >= 1 and at least one channel_mult")
        if image_size % 2 ** (n_levels - 1):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{n_levels - 1} ({n_levels} levels)")
        if any(not 0 <= lvl < n_levels for lvl in attn_levels):
            raise ValueError(f"attn_levels {attn_levels} out of range for {n_levels} levels")
        self.emb_dim, self.image_size, self.n_levels = emb_dim, image_size, n_levels
        emb_ch = 4 * width
        self.emb_mlp = nn.Sequential(nn.Linear(emb_dim, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.inp = nn.Conv2d(in_channels, width, 3, padding=1)

        # encoder: record the channels of every activation pushed onto the skip stack
        self.down = nn.ModuleList()
        skip_ch, ch = [width], width
        for lvl, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(Level(ch, width * mult, emb_ch, dropout, lvl in attn_levels))
                ch = width * mult
                skip_ch.append(ch)
            if lvl < n_levels - 1:
                self.down.append(Downsample(ch))
                skip_ch.append(ch)

        self.mid1 = ResBlock(ch, ch, emb_ch, dropout)
        self.mid_attn = Attention(ch)
        self.mid2 = ResBlock(ch, ch, emb_ch, dropout)

        # decoder: num_res_blocks + 1 blocks per level, each consuming one skip activation
        self.up = nn.ModuleList()
        for lvl, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(Level(ch + skip_ch.pop(), width * mult, emb_ch, dropout, lvl in attn_levels))
                ch = width * mult
            if lvl > 0:
                self.up.append(Upsample(ch))
        assert not skip_ch

        self.out_norm = _norm(ch)
        self.out = nn.Conv2d(ch, in_channels, 3, padding=1)
        if generator is not None:
            init_weights(self, generator)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x_in.shape
        if h % 2 ** (self.n_levels - 1) or w % 2 ** (self.n_levels - 1):
            raise ValueError(f"spatial size {h}x{w} is not divisible by 2^{self.n_levels - 1}")
        c_noise = c_noise.reshape(-1).expand(b)  # [B] (a single scalar is broadcast)
        emb = self.emb_mlp(timestep_embedding(c_noise, self.emb_dim).to(x_in.dtype))  # [B, 4W]

        x = self.inp(x_in)  # [B, W, H, W]
        skips = [x]
        for block in self.down:
            x = block(x, emb) if isinstance(block, Level) else block(x)
            skips.append(x)
        x = self.mid2(self.mid_attn(self.mid1(x, emb)), emb)  # coarsest resolution
        for block in self.up:
            x = block(torch.cat([x, skips.pop()], dim=1), emb) if isinstance(block, Level) else block(x)
        return self.out(F.silu(self.out_norm(x)))  # [B, C, H, W]


@torch.no_grad()
def init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw conv/linear weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) from `generator`.

    This is PyTorch's default scheme (kaiming_uniform with a=sqrt(5)); norm layers keep (1, 0).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            bound = 1.0 / math.sqrt(m.weight[0].numel())  # fan_in = c_in * kh * kw, or in_features
            m.weight.uniform_(-bound, bound, generator=generator)
            if m.bias is not None:
                m.bias.uniform_(-bound, bound, generator=generator)
