"""The one-step least-squares denoiser of Halder & Pehlevan and the Gaussian it generates (numpy).

Reference: I. Halder (and C. Pehlevan), "A solvable generative model with a linear, one-step denoiser",
arXiv 2411.17807 (withdrawn ICLR 2025 version: "On the onset of memorization to generalization transition
in diffusion models").  Convention of the paper (Ornstein-Uhlenbeck time T, default T = 2):

- forward: each training point x_i [d] is noised once, y_i = e^{-T} x_i + sqrt(l (1 - e^{-2T})) xi_i, with
  the "generalization parameter" l = e^{-2T} of the authors' code (their noise variance is l times the OU
  variance 1 - e^{-2T});
- denoiser: ordinary least squares with an intercept and no ridge, x ~ beta0 + beta1 y, fitted on the n
  pairs (y_i, x_i).  When n <= d + 1 the problem is underdetermined and we take the minimum-norm beta1 of
  the centred problem (beta0 = x_bar - beta1 y_bar), which is what scikit-learn's LinearRegression (the
  authors' solver) returns;
- generation in closed form: z ~ N(e^{-T} x_bar, s^2 I) with s^2 = e^{-2T} v_bar + l (1 - e^{-2T}), v_bar the
  per-dimension variance of the training set (ddof = 1) averaged over dimensions, then x = beta0 + beta1 z:
  rho_G = N(beta0 + e^{-T} beta1 x_bar, s^2 beta1 beta1^T).  (The authors' code writes the covariance as
  s^2 beta1^T beta1, transposed; see docs/results/linear.md, "Two defects of the authors' public code".)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["OneStepFit", "default_l", "fit_one_step", "one_step_generated", "one_step_noise"]


def default_l(time: float) -> float:
    """The authors' generalization parameter l = e^{-2T}."""
    return math.exp(-2.0 * time)


def one_step_noise(x: np.ndarray, xi: np.ndarray, *, time: float, l: float | None = None) -> np.ndarray:
    """y = e^{-T} x + sqrt(l (1 - e^{-2T})) xi for x, xi [n, d]."""
    l = default_l(time) if l is None else float(l)
    return math.exp(-time) * np.asarray(x, np.float64) + math.sqrt(l * -math.expm1(-2.0 * time)) * np.asarray(xi, np.float64)


@dataclass(frozen=True)
class OneStepFit:
    """x_hat = beta0 + beta1 y: beta0 [d], beta1 [d, d] (row j predicts coordinate j)."""

    beta0: np.ndarray
    beta1: np.ndarray


def fit_one_step(x: np.ndarray, y: np.ndarray) -> OneStepFit:
    """Least squares with intercept of x [n, d] on y [n, d]; minimum-norm beta1 when n <= d + 1."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or x.shape != y.shape or x.shape[0] < 1:
        raise ValueError(f"x and y must both be [n, d] with n >= 1; got {x.shape} and {y.shape}")
    x_bar, y_bar = x.mean(0), y.mean(0)
    coef, *_ = np.linalg.lstsq(y - y_bar, x - x_bar, rcond=None)  # [d_in, d_out], minimum norm
    beta1 = coef.T
    return OneStepFit(beta0=x_bar - beta1 @ y_bar, beta1=beta1)


def one_step_generated(fit: OneStepFit, train: np.ndarray, *, time: float, l: float | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(mean [d], covariance [d, d]) of x = beta0 + beta1 z, z ~ N(e^{-T} x_bar, s^2 I) (module docstring).
    The covariance has rank <= rank(beta1) <= n - 1."""
    train = np.asarray(train, np.float64)
    l = default_l(time) if l is None else float(l)
    decay = math.exp(-time)
    v_bar = float(train.var(axis=0, ddof=1).mean()) if train.shape[0] > 1 else 0.0
    s2 = decay**2 * v_bar + l * -math.expm1(-2.0 * time)
    mean = fit.beta0 + decay * fit.beta1 @ train.mean(0)
    return mean, s2 * fit.beta1 @ fit.beta1.T
