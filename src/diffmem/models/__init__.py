"""Networks (raw `net(x_in, c_noise)`) and the `denoiser(x, sigma) -> x0_hat` wrappers around them."""

from __future__ import annotations

import math

from torch import nn

from diffmem.config import ModelConfig
from diffmem.families.linear import LinearNet
from diffmem.models.mlp import MLP, TimeMLP
from diffmem.models.precond import EDMPrecond, VPPrecond
from diffmem.models.unet import UNet


def build_denoiser(cfg: ModelConfig, *, data_shape: tuple[int, ...]) -> nn.Module:
    """Build the preconditioned denoiser for a model config and a per-sample data shape."""
    if cfg.arch == "mlp":
        net = MLP(dim=math.prod(data_shape), width=cfg.width, depth=cfg.depth, emb_dim=cfg.emb_dim)
    elif cfg.arch in ("time_mlp", "time_mlp_emb"):
        net = TimeMLP(dim=math.prod(data_shape), width=cfg.width, depth=cfg.depth,
                      emb_dim=cfg.emb_dim if cfg.arch == "time_mlp_emb" else None)
    elif cfg.arch == "unet":
        if len(data_shape) != 3:
            raise ValueError(f"unet needs image-shaped data (C, H, W); got per-sample shape {data_shape}")
        net = UNet(
            in_channels=data_shape[0],
            width=cfg.width,
            channel_mult=tuple(cfg.channel_mult),
            num_res_blocks=cfg.num_res_blocks,
            attn_levels=tuple(cfg.attn_levels),
            emb_dim=cfg.emb_dim,
            dropout=cfg.dropout,
            image_size=data_shape[-1],
        )
    elif cfg.arch == "linear":
        # knots span the c_noise each preconditioning feeds the net (EDM: 250 ln sigma; VP: the timestep)
        span = None if cfg.parameterization == "edm" else (0.0, float(cfg.num_timesteps - 1))
        net = LinearNet(math.prod(data_shape), **({} if span is None else {"c_noise_range": span}))
    else:
        raise ValueError(f"unknown model arch {cfg.arch!r}")
    if cfg.parameterization == "edm":
        return EDMPrecond(net, sigma_data=cfg.sigma_data)
    return VPPrecond(net, beta_min=cfg.beta_min, beta_max=cfg.beta_max, num_timesteps=cfg.num_timesteps)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
