"""The denoiser of a closed-form family (empirical and its regularizations, or linear), built on a training set."""

from __future__ import annotations

import numpy as np
import torch

from diffmem.config import CLOSED_FORM, ModelConfig
from diffmem.families.empirical import ConsistencyDenoiser, EmpiricalDenoiser, KernelSmoothedDenoiser, TikhonovDenoiser
from diffmem.families.linear import fit_linear_denoiser


def closed_form_denoiser(model: ModelConfig, train: np.ndarray) -> torch.nn.Module:
    """The denoiser(x [B, D], sigma [B]) of a closed-form family built on the training set train [n, D]."""
    x = torch.as_tensor(np.ascontiguousarray(train.reshape(train.shape[0], -1)), dtype=torch.float32)
    if model.family == "linear":
        return fit_linear_denoiser(x)
    if model.family != "empirical":
        raise ValueError(f"family {model.family!r} is not closed-form (closed-form families: {CLOSED_FORM})")
    # distances and log-sum-exp in float64: at sigma_min = 0.002 the logits span ~1e6 and float32 rounding
    # would pick a neighbour at random among near-ties
    kwargs = {"compute_dtype": torch.float64}
    reg, strength = model.regularization, float(model.strength)
    if reg == "none":
        return EmpiricalDenoiser(x, **kwargs)
    if reg == "tikhonov":
        return TikhonovDenoiser(x, strength=strength, **kwargs)
    if reg == "consistency":
        # the floor on the kernel sum relative to a typical noisy neighbour (see ConsistencyDenoiser): the
        # raw kernel sum is ~e^{-D/2} next to a training point, which a floor of order 1 would wipe out
        return ConsistencyDenoiser(x, strength=strength, floor_on="typical", **kwargs)
    if reg == "kernel":
        return KernelSmoothedDenoiser(x, bandwidth=strength, **kwargs)
    raise ValueError(f"unknown regularization {reg!r}")
