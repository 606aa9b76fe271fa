"""Closed-form L2 distances between Gaussian kernel density estimates and Gaussians (E_TG, E_OG).

Halder & Pehlevan (arXiv 2411.17807 and its withdrawn ICLR 2025 version) compare densities with the
L2 distance ||rho_D - rho_G||^2 = int rho_D^2 - 2 int rho_D rho_G + int rho_G^2, where rho_D is a set of N
points smoothed by an isotropic Gaussian kernel of width eps (their eps = sigma N^(-1/d), one width per
set) and rho_G the generated density, a Gaussian N(m, C) for the linear family.  Every term is a
Gaussian integral, int N(x; a, A) N(x; b, B) dx = N(a - b; 0, A + B), so

    int rho_D^2       = (1/N^2) sum_ij N(x_i - x_j; 0, 2 eps^2 I)
    int rho_D rho_G   = (1/N)   sum_i  N(x_i; m, C + eps^2 I)
    int rho_G^2       = N(0; 0, 2 C)                 (infinite when C is singular)

E = int rho_D^2 - 2 int rho_D rho_G leaves out int rho_G^2: it is common to E_TG and E_OG, so
Delta = E_TG - E_OG does not need it, and it also works for a degenerate rho_G (n <= d).  This is the
quantity of the authors' code.  The diagonal (i = j) part of int rho_D^2 is kept apart: with per-set widths
eps = sigma N^(-1/d) it is the same for every set and dwarfs the rest at large d (see ``l2_kde_gaussian``).
Everything is computed in float64 from log-sum-exps; the result is
reported in units of u = (4 pi sigma_ref^2)^(-d/2), the self-overlap int N(0, sigma_ref^2 I)^2 (so a KDE of
N points at eps = sigma N^(-1/d) has int rho_D^2 ~ 1 in these units), which keeps the values O(1) at any
d (raw values are ~1e-50 at d = 100).

Functions take numpy arrays; points [N, d], mean [d], cov [d, d].
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["log_kde_overlap", "log_kde_gaussian_overlap", "log_gaussian_overlap", "l2_kde_gaussian",
           "l2_kde_kde", "halder_width"]


# scipy is imported on first use, not with this module: importing scipy.linalg and scipy.special costs a job
# ~0.7 CPU-seconds, and the package's __init__ imports this module for every stage that uses a metric (the
# quality stage of a run without E_TG never calls it)
def _logsumexp(values):
    from scipy.special import logsumexp as scipy_logsumexp

    return scipy_logsumexp(values)


def _cho_factor(a: np.ndarray, *, lower: bool):
    from scipy.linalg import cho_factor as scipy_cho_factor

    return scipy_cho_factor(a, lower=lower)


def _solve_triangular(a: np.ndarray, b: np.ndarray, *, lower: bool) -> np.ndarray:
    from scipy.linalg import solve_triangular as scipy_solve_triangular

    return scipy_solve_triangular(a, b, lower=lower)

_LOG_2PI = math.log(2.0 * math.pi)


def halder_width(num_points: int, dim: int, *, sigma: float = 1.0) -> float:
    """eps = sigma N^(-1/d): the kernel width of a set of N points (Halder & Pehlevan's prescription, with
    sigma the population standard deviation as in their code)."""
    if num_points < 1 or dim < 1 or not sigma > 0:
        raise ValueError(f"need N >= 1, d >= 1 and sigma > 0; got {num_points}, {dim}, {sigma}")
    return float(sigma) * float(num_points) ** (-1.0 / dim)


def _points(x, name: str) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"{name} must be [N, d] with N >= 1; got shape {a.shape}")
    return a


def log_kde_overlap(x: np.ndarray, y: np.ndarray, *, eps_x: float, eps_y: float, chunk: int = 1024,
                    exclude_diagonal: bool = False) -> float:
    """log int rho_x rho_y for the KDEs of x [N, d] (width eps_x) and y [M, d] (width eps_y):
    log (1/(N M)) sum_ij N(x_i - y_j; 0, (eps_x^2 + eps_y^2) I).  With y = x, log int rho_x^2.

    exclude_diagonal (y must be x): only the pairs i != j, still divided by N^2.  The diagonal alone is
    (4 pi eps^2)^(-d/2) / N; at large d it exceeds the off-diagonal part by factors like e^{d/2}, so the
    two must be kept apart for differences of small terms to survive float64 rounding."""
    if exclude_diagonal and x is not y:
        raise ValueError("exclude_diagonal needs y to be x (the same array object)")
    a, b = _points(x, "x"), _points(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if not (eps_x > 0 and eps_y > 0):
        raise ValueError(f"kernel widths must be positive; got {eps_x}, {eps_y}")
    d = a.shape[1]
    var = float(eps_x) ** 2 + float(eps_y) ** 2
    center = b.mean(0)  # distances are translation invariant; centring avoids cancellation in |a|^2 + |b|^2 - 2ab
    a, b = a - center, b - center
    b2 = (b * b).sum(1)  # [M]
    scale = 0.5 / var
    same = x is y  # the pair sum is symmetric: visit the blocks on and above the diagonal only
    parts = []
    for i in range(0, a.shape[0], chunk):
        blk = a[i : i + chunk]  # [c, d]
        start = i if same else 0
        logits = blk @ b[start:].T  # [c, M'], turned in place into -|a_i - b_j|^2 / (2 var)
        logits *= 2.0
        logits -= (blk * blk).sum(1)[:, None]
        logits -= b2[None, start:]
        np.minimum(logits, 0.0, out=logits)  # rounding can leave a tiny positive -|.|^2
        logits *= scale
        if exclude_diagonal:
            np.fill_diagonal(logits[:, : blk.shape[0]], -np.inf)
            if not np.isfinite(logits).any():  # a single point: no pairs in this block
                continue
        top = float(logits.max())
        logits -= top
        np.exp(logits, out=logits)
        total = float(logits.sum())
        if same:  # the diagonal block holds both (i, j) and (j, i); the blocks to its right stand for two
            total = 2.0 * total - float(logits[:, : blk.shape[0]].sum())
        parts.append(top + math.log(total))
    if not parts:
        return -math.inf
    log_sum = _logsumexp(parts)
    return float(log_sum - math.log(a.shape[0]) - math.log(b.shape[0]) - 0.5 * d * (_LOG_2PI + math.log(var)))


def _chol(cov: np.ndarray) -> np.ndarray:
    c = np.asarray(cov, np.float64)
    try:
        return _cho_factor(0.5 * (c + c.T), lower=True)[0]
    except np.linalg.LinAlgError as exc:
        raise ValueError("covariance is not positive definite") from exc


def log_kde_gaussian_overlap(x: np.ndarray, *, eps: float, mean: np.ndarray, cov: np.ndarray) -> float:
    """log int rho_x N(m, C) = log (1/N) sum_i N(x_i; m, C + eps^2 I) for the KDE of x [N, d] at width eps.
    C may be singular (a degenerate rho_G): C + eps^2 I is not."""
    a = _points(x, "x")
    d = a.shape[1]
    m = np.asarray(mean, np.float64).reshape(d)
    k = np.asarray(cov, np.float64).reshape(d, d) + float(eps) ** 2 * np.eye(d)
    low = _chol(k)
    z = _solve_triangular(low, (a - m).T, lower=True)  # [d, N]
    logdet = 2.0 * np.log(np.diag(low)).sum()
    logs = -0.5 * (z * z).sum(0) - 0.5 * (d * _LOG_2PI + logdet)  # [N]
    return float(_logsumexp(logs) - math.log(a.shape[0]))


def log_gaussian_overlap(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray) -> float:
    """log int N(m1, C1) N(m2, C2) = log N(m1 - m2; 0, C1 + C2); C1 + C2 must be positive definite."""
    m1, m2 = np.atleast_1d(np.asarray(mean1, np.float64)), np.atleast_1d(np.asarray(mean2, np.float64))
    d = m1.size
    low = _chol(np.asarray(cov1, np.float64).reshape(d, d) + np.asarray(cov2, np.float64).reshape(d, d))
    z = _solve_triangular(low, m1 - m2, lower=True)
    return float(-0.5 * z @ z - 0.5 * d * _LOG_2PI - np.log(np.diag(low)).sum())


def l2_kde_gaussian(x: np.ndarray, *, eps: float, mean: np.ndarray, cov: np.ndarray, sigma_ref: float = 1.0,
                    offdiag_log: float | None = None) -> dict[str, float]:
    """The paper's E = int rho_D^2 - 2 int rho_D rho_G for the KDE of x [N, d] at width eps and
    rho_G = N(mean, cov), in units of (4 pi sigma_ref^2)^(-d/2) (see the module docstring), split as

        E = diag + off - 2 cross,   diag = (sigma_ref / eps)^d / N   (the i = j pairs of int rho_D^2),

    so that 'e_offdiag' = off - 2 cross is exact to float64 precision of its own (small) terms.  With the
    per-set widths eps = sigma_ref N^(-1/d), diag = 1 for every set: it cancels in E_TG - E_OG, and
    'e_offdiag' is what to compare (at d = 100 the diagonal is e^{30} times the rest, which float64 would
    round away).  `offdiag_log`: log of the off-diagonal part of int rho_D^2 if already computed (for a
    large population set it is the expensive O(N^2 d) term).  Returns {'e', 'e_offdiag', 'diag', 'off',
    'cross'}."""
    a = _points(x, "x")
    n, d = a.shape
    log_unit = 0.5 * d * (math.log(4.0 * math.pi) + 2.0 * math.log(sigma_ref))
    if offdiag_log is None:
        offdiag_log = log_kde_overlap(a, a, eps_x=eps, eps_y=eps, exclude_diagonal=True)
    log_cross = log_kde_gaussian_overlap(a, eps=eps, mean=mean, cov=cov)
    diag = math.exp(d * math.log(sigma_ref / eps) - math.log(n))
    off, cross = math.exp(offdiag_log + log_unit), math.exp(log_cross + log_unit)
    return {"e": diag + off - 2.0 * cross, "e_offdiag": off - 2.0 * cross, "diag": diag, "off": off, "cross": cross}


def l2_kde_kde(x: np.ndarray, *, eps_x: float, y: np.ndarray, eps_y: float, sigma_ref: float = 1.0) -> dict[str, float]:
    """E = int rho_x^2 - 2 int rho_x rho_y for two KDEs (rho_y: generated samples smoothed at their own
    width, when the exact rho_G is not available), in units of (4 pi sigma_ref^2)^(-d/2), split as in
    ``l2_kde_gaussian``: {'e', 'e_offdiag', 'diag', 'off', 'cross'}."""
    a, b = _points(x, "x"), _points(y, "y")
    n, d = a.shape
    log_unit = 0.5 * d * (math.log(4.0 * math.pi) + 2.0 * math.log(sigma_ref))
    diag = math.exp(d * math.log(sigma_ref / eps_x) - math.log(n))
    off = math.exp(log_kde_overlap(a, a, eps_x=eps_x, eps_y=eps_x, exclude_diagonal=True) + log_unit)
    cross = math.exp(log_kde_overlap(a, b, eps_x=eps_x, eps_y=eps_y) + log_unit)
    return {"e": diag + off - 2.0 * cross, "e_offdiag": off - 2.0 * cross, "diag": diag, "off": off, "cross": cross}
