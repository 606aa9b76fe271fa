"""Exact densities and denoisers of the synthetic datasets, and the empirical optimal denoiser.

Noise convention: x = x0 + sigma z, z ~ N(0, I). For data with a known density the population
(true) optimal denoiser E[x0 | x] is closed-form. For a finite training set the minimizer of the
empirical denoising loss is the posterior mean under the uniform distribution on the training
points, a softmax-weighted average of them (Baptista et al. 2025, arXiv 2501.15785); sampling with
it only reproduces training points. The distance of a trained denoiser to each of the two is the
"generalization" and the "memorization" error of the Gaussian-mixture experiment of Bonnaire et
al. 2025 (arXiv 2505.17638).

Densities take numpy [M, d] and return float64; denoisers take numpy arrays or torch tensors [B, D]
with sigma a number or one value per row ([B] or [B, 1]) and return the type they were given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["IsotropicGaussian", "SymmetricGMM", "empirical_denoiser", "denoiser_errors", "gaussian_kl", "mean_loglik"]

_LOG_2PI = math.log(2 * math.pi)


def _to_tensor(x) -> tuple[torch.Tensor, bool]:
    """x as a floating tensor, and whether it came in as numpy (to convert the result back)."""
    if isinstance(x, torch.Tensor):
        return (x if x.is_floating_point() else x.double()), False
    return torch.as_tensor(np.asarray(x, np.float64)), True


def _sigma_column(sigma, x: torch.Tensor) -> torch.Tensor:
    """sigma (a number, [B] or [B, 1]) as a [B, 1] or [1, 1] tensor of x's dtype and device."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1)
    if s.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"sigma has {s.shape[0]} values for {x.shape[0]} rows")
    if not bool(torch.all(s > 0)):
        raise ValueError("sigma must be positive")
    return s


def _back(result: torch.Tensor, as_numpy: bool):
    return result.cpu().numpy() if as_numpy else result


@dataclass(frozen=True)
class IsotropicGaussian:
    """N(mean, std^2 I_d); `mean` is a number (the same in every coordinate) or a [d] vector."""

    dim: int
    mean: float | tuple[float, ...] | np.ndarray = 0.0
    std: float = 1.0

    def _mean(self) -> np.ndarray:
        return np.array(np.broadcast_to(np.asarray(self.mean, np.float64), (self.dim,)))  # [d], writable copy

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float64) - self._mean()) / self.std  # [M, d]
        return -0.5 * (z**2).sum(axis=1) - self.dim * (math.log(self.std) + 0.5 * _LOG_2PI)

    def sample(self, num: int, rng: np.random.Generator) -> np.ndarray:
        return self._mean() + self.std * rng.standard_normal((num, self.dim))

    def smoothed(self, bandwidth: float) -> IsotropicGaussian:
        """This density convolved with N(0, bandwidth^2 I): what a KDE of its samples estimates."""
        return IsotropicGaussian(self.dim, self.mean, math.hypot(self.std, bandwidth))

    @torch.no_grad()
    def denoise(self, x, sigma):
        """Population denoiser E[x0 | x] = m + s^2 / (s^2 + sigma^2) (x - m): linear shrinkage."""
        t, as_numpy = _to_tensor(x)
        s2 = _sigma_column(sigma, t) ** 2  # [B, 1]
        m = torch.as_tensor(self._mean(), dtype=t.dtype, device=t.device)  # [D]
        return _back(m + self.std**2 / (self.std**2 + s2) * (t - m), as_numpy)


@dataclass(frozen=True)
class SymmetricGMM:
    """0.5 N(+mu 1_d, std^2 I) + 0.5 N(-mu 1_d, std^2 I); std = 1 is the synthetic data of
    arXiv 2505.17638."""

    dim: int
    mu: float = 1.0
    std: float = 1.0

    def _means(self) -> np.ndarray:
        return np.stack([np.full(self.dim, self.mu), np.full(self.dim, -self.mu)])  # [2, d]

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        comp = [-0.5 * ((x - m) ** 2).sum(axis=1) / self.std**2 for m in self._means()]  # 2 x [M]
        return np.logaddexp(*comp) - math.log(2) - self.dim * (math.log(self.std) + 0.5 * _LOG_2PI)

    def sample(self, num: int, rng: np.random.Generator) -> np.ndarray:
        signs = np.where(rng.integers(0, 2, size=num) == 1, 1.0, -1.0)[:, None]  # [num, 1]
        return signs * self.mu + self.std * rng.standard_normal((num, self.dim))

    def smoothed(self, bandwidth: float) -> SymmetricGMM:
        """This density convolved with N(0, bandwidth^2 I): what a KDE of its samples estimates."""
        return SymmetricGMM(self.dim, self.mu, math.hypot(self.std, bandwidth))

    @torch.no_grad()
    def denoise(self, x, sigma):
        """Population denoiser. Given component k, x ~ N(m_k, (s^2 + sigma^2) I) and
        E[x0 | x, k] = m_k + s^2 / (s^2 + sigma^2) (x - m_k); average over k with the
        responsibilities P(k | x) = softmax_k(-||x - m_k||^2 / (2 (s^2 + sigma^2)))."""
        t, as_numpy = _to_tensor(x)
        s2 = self.std**2
        v = s2 + _sigma_column(sigma, t) ** 2  # [B, 1]
        m = torch.as_tensor(self._means(), dtype=t.dtype, device=t.device)  # [2, D]
        # ||x - m_k||^2 differ between the two components only through -2 x.m_k (||m_k|| is the
        # same for both): the common terms cancel in the softmax, so no large norms are subtracted
        logits = (t @ m.T) / v  # [B, 2]
        r = torch.softmax(logits, dim=1)  # [B, 2]
        post = m[None] + (s2 / v)[:, :, None] * (t[:, None, :] - m[None])  # [B, 2, D]
        return _back((r[:, :, None] * post).sum(1), as_numpy)


@torch.no_grad()
def empirical_denoiser(x, sigma, train, *, chunk: int = 8192):
    """Posterior mean of x0 when x0 is uniform on the n training points [n, D]:

        D(x) = sum_i w_i x_i,  w = softmax_i(-||x - x_i||^2 / (2 sigma^2)),

    the exact minimizer of the empirical denoising loss. x is [B, D] (numpy or torch), sigma a
    number or [B]. The logits are formed in float64 whatever x's dtype (for small sigma, float32
    rounding of the squared distances would scramble the softmax) from x.x_i - ||x_i||^2 / 2 (the
    ||x||^2 term is common to all i and cancels). The training points are streamed in chunks with an
    online log-sum-exp, so memory is O(B * chunk). Returns x's type and dtype."""
    t, as_numpy = _to_tensor(x)
    out_dtype = t.dtype
    xd = t.double()  # [B, D]
    s2 = _sigma_column(sigma, xd) ** 2  # [B, 1] or [1, 1]
    tr, _ = _to_tensor(train)
    tr = tr.to(device=xd.device, dtype=torch.float64)  # [n, D]
    if tr.ndim != 2 or tr.shape[1] != xd.shape[1]:
        raise ValueError(f"train must be [n, {xd.shape[1]}]; got {tuple(tr.shape)}")
    run_max = torch.full((xd.shape[0], 1), -math.inf, dtype=torch.float64, device=xd.device)
    run_sum = torch.zeros((xd.shape[0], 1), dtype=torch.float64, device=xd.device)
    run_acc = torch.zeros_like(xd)  # [B, D] unnormalised weighted sum
    for j in range(0, tr.shape[0], chunk):
        block = tr[j : j + chunk]  # [c, D]
        logits = (xd @ block.T - 0.5 * (block * block).sum(1)) / s2  # [B, c]
        new_max = torch.maximum(run_max, logits.max(dim=1, keepdim=True).values)
        rescale = torch.exp(run_max - new_max)  # 0 on the first chunk (exp(-inf))
        w = torch.exp(logits - new_max)  # [B, c]
        run_sum = run_sum * rescale + w.sum(1, keepdim=True)
        run_acc = run_acc * rescale + w @ block
        run_max = new_max
    return _back((run_acc / run_sum).to(out_dtype), as_numpy)


@torch.no_grad()
def denoiser_errors(denoiser: Callable, *, train: np.ndarray, true_dist, sigmas: list[float], num_probe: int,
                    rng: np.random.Generator, batch_size: int = 4096, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Per-sigma mean squared errors (averaged over probes and dimensions) of a denoiser.

    `denoiser(x [B, D] tensor, sigma [B] tensor) -> [B, D]` is called with `dtype` on `device`. At
    each sigma, probes x = x0 + sigma z with x0 ~ true_dist (fresh for each sigma). Returns arrays
    over `sigmas`:
    - 'pop': MSE against the population denoiser, the generalization error;
    - 'emp': MSE against the empirical optimal denoiser of `train`, the memorization error;
    - 'pop_vs_emp': MSE between those two references, the scale below which the first two can be
      told apart (at large sigma both references coincide)."""
    train64 = torch.as_tensor(np.asarray(train, np.float64))  # [n, D]
    errs = {"pop": [], "emp": [], "pop_vs_emp": []}
    for sigma in sigmas:
        x0 = np.asarray(true_dist.sample(num_probe, rng), np.float64)  # [P, D]
        x = torch.as_tensor(x0 + sigma * rng.standard_normal(x0.shape))  # [P, D] float64
        sq = {key: 0.0 for key in errs}
        for i in range(0, num_probe, batch_size):
            xb = x[i : i + batch_size]
            s = torch.full((xb.shape[0],), float(sigma), dtype=torch.float64)
            out = torch.as_tensor(denoiser(xb.to(device=device, dtype=dtype), s.to(device=device, dtype=dtype)))
            out = out.detach().to(device="cpu", dtype=torch.float64).reshape(xb.shape)
            pop = true_dist.denoise(xb, s)
            emp = empirical_denoiser(xb, s, train64)
            sq["pop"] += float(((out - pop) ** 2).sum())
            sq["emp"] += float(((out - emp) ** 2).sum())
            sq["pop_vs_emp"] += float(((pop - emp) ** 2).sum())
        for key in errs:
            errs[key].append(sq[key] / x.numel())
    return {key: np.array(values) for key, values in errs.items()}


def mean_loglik(samples: np.ndarray, true_dist) -> float:
    """Mean log-likelihood (nats per sample) of samples [M, d] under the true density."""
    return float(np.mean(true_dist.logpdf(np.asarray(samples, np.float64))))


def gaussian_kl(mean_p: np.ndarray, cov_p: np.ndarray, mean_q: np.ndarray, cov_q: np.ndarray, *,
                rank_rtol: float = 1e-10) -> float:
    """KL(P || Q) in nats for P = N(mean_p, cov_p), Q = N(mean_q, cov_q) in d dimensions, in closed form:

        KL = 1/2 [ tr(cov_q^-1 cov_p) + (mean_q - mean_p)^T cov_q^-1 (mean_q - mean_p) - d
                   + ln det cov_q - ln det cov_p ].

    cov_q must be positive definite. A singular cov_p (an eigenvalue at or below rank_rtol times the
    largest: P lives on a subspace, e.g. the generated Gaussian of a linear model fitted on n <= d
    points) gives +inf, since P then puts all its mass where Q has density but P has none elsewhere.
    """
    mean_p, mean_q = np.asarray(mean_p, np.float64), np.asarray(mean_q, np.float64)
    cov_p, cov_q = np.asarray(cov_p, np.float64), np.asarray(cov_q, np.float64)
    d = mean_p.shape[0]
    if cov_p.shape != (d, d) or cov_q.shape != (d, d) or mean_q.shape != (d,):
        raise ValueError(f"gaussian_kl: shapes {mean_p.shape}, {cov_p.shape}, {mean_q.shape}, {cov_q.shape} do not match")
    chol_q = np.linalg.cholesky(cov_q)  # raises LinAlgError if cov_q is not positive definite
    eig_p = np.linalg.eigvalsh((cov_p + cov_p.T) / 2)
    if eig_p.min() <= rank_rtol * max(float(eig_p.max()), 0.0):
        return math.inf
    solved = np.linalg.solve(chol_q, cov_p)  # L^-1 cov_p
    trace = float(np.trace(np.linalg.solve(chol_q.T, solved)))  # tr(cov_q^-1 cov_p)
    diff = np.linalg.solve(chol_q, mean_q - mean_p)
    logdet_q = 2.0 * float(np.log(np.diag(chol_q)).sum())
    logdet_p = float(np.log(eig_p).sum())
    return 0.5 * (trace + float(diff @ diff) - d + logdet_q - logdet_p)
