"""Distances between two sets of points or features: Fréchet distance, KID, energy distance, SW2.

They compare a set of generated samples with a reference set (held-out data or fresh population
samples), in data space or in a feature space (see `features.py`). All take arrays [N, F] and
[M, F], compute in float64 and return Python floats; each docstring states the estimator's bias.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["gaussian_moments", "gaussian_frechet", "frechet_distance", "kernel_inception_distance",
           "mmd2_polynomial", "polynomial_kernel", "energy_distance", "sliced_wasserstein"]


def _as_2d_float64(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be [N, F]; got shape {a.shape}")
    return a


def _check_pair(a: np.ndarray, b: np.ndarray, *, min_rows: int) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if min(a.shape[0], b.shape[0]) < min_rows:
        raise ValueError(f"need at least {min_rows} points per set; got {a.shape[0]} and {b.shape[0]}")


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of a covariance; eigenvalues that rounding pushed below 0 count as 0."""
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_frechet(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(mu1, C1) and N(mu2, C2):

        ||mu1 - mu2||^2 + tr(C1) + tr(C2) - 2 tr((C1^1/2 C2 C1^1/2)^1/2)

    (Dowson & Landau 1982; the FID of Heusel et al. 2017). The cross term uses the eigenvalues of the
    symmetric PSD matrix C1^1/2 C2 C1^1/2 rather than sqrtm(C1 C2): that stays real, needs no eps*I
    regularisation and is exact for singular covariances (fewer points than features)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if not (mu1.shape == mu2.shape and cov1.shape == cov2.shape == (mu1.size, mu1.size)):
        raise ValueError(f"shape mismatch: mu {mu1.shape}, {mu2.shape}; cov {cov1.shape}, {cov2.shape}")
    root1 = _psd_sqrt(cov1)
    middle = root1 @ cov2 @ root1  # [F, F], PSD up to rounding
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    # rounding can leave -1e-12 for identical inputs; a distance is never negative
    return max(float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * cross), 0.0)


def gaussian_moments(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean [F] and unbiased covariance [F, F] of [N, F] in float64: the Gaussian that `frechet_distance`
    fits. A fixed reference's moments, computed once, serve every comparison with it."""
    a = _as_2d_float64(feats, "feats")
    return a.mean(0), np.cov(a, rowvar=False)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, *,
                     moments_b: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """Fréchet distance between Gaussians fitted (mean, unbiased covariance) to [N, F] and [M, F].

    `moments_b`, if given, is `gaussian_moments(feats_b)` computed beforehand (the same numbers).
    Biased upward for finite sets (by roughly tr(C)/N + tr(C)/M for small shifts): compare values
    computed at equal sample counts only."""
    a, b = _as_2d_float64(feats_a, "feats_a"), _as_2d_float64(feats_b, "feats_b")
    _check_pair(a, b, min_rows=2)
    return gaussian_frechet(*gaussian_moments(a), *(gaussian_moments(b) if moments_b is None else moments_b))


def _power(base: np.ndarray, degree: int) -> np.ndarray:
    """base ** degree for a small positive integer degree by repeated products: numpy's ** 3 calls pow() per
    element, ~24x slower than two products on a 100 x 100 float64 kernel matrix, KID's whole cost in the
    quality stage (~25 CPU-seconds of the default run); the two differ by ~1 float64 ulp (2e-16)."""
    if not (isinstance(degree, (int, np.integer)) and 1 <= degree <= 8):
        return base**degree
    if degree == 1:
        return base.copy()
    out = base * base  # the value of base.copy() *= base, without the copy
    for _ in range(int(degree) - 2):
        out *= base
    return out


def polynomial_kernel(x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float, coef0: float = 1.0) -> np.ndarray:
    """The kernel matrix k(x_i, y_j) = (gamma x_i.y_j + coef0)^degree of float64 [m, F] and [n, F]: [m, n].

    Scaled and shifted in place on the product's buffer: the same roundings, in the same order, as
    `gamma * (x @ y.T) + coef0`, with two fewer [m, n] temporaries (KID evaluates three kernels of
    100 x 100 per subset, 50 subsets per checkpoint and feature space)."""
    base = x @ y.T  # [m, n]; x @ x.T takes BLAS's symmetric product
    base *= gamma
    base += coef0
    return _power(base, degree)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, *, degree: int, gamma: float, coef0: float) -> float:
    """The unbiased MMD^2 of float64 [m, F] and [n, F] (m, n >= 2) with the polynomial kernel."""
    m, n = x.shape[0], y.shape[0]
    kxx = polynomial_kernel(x, x, degree=degree, gamma=gamma, coef0=coef0)  # [m, m]
    kyy = polynomial_kernel(y, y, degree=degree, gamma=gamma, coef0=coef0)  # [n, n]
    kxy = polynomial_kernel(x, y, degree=degree, gamma=gamma, coef0=coef0)  # [m, n]
    # the array methods, not np.trace / np.mean: the same sums and division without their Python wrappers
    # (KID calls this 50 times per checkpoint and feature space)
    within_x = (kxx.sum() - kxx.trace()) / (m * (m - 1))
    within_y = (kyy.sum() - kyy.trace()) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * (kxy.sum() / (m * n)))


def mmd2_polynomial(x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float | None = None,
                    coef0: float = 1.0) -> float:
    """Unbiased MMD^2 of [m, F] and [n, F] with the kernel k(u, v) = (gamma u.v + coef0)^degree.

    The within-set means leave out the diagonal k(x_i, x_i), which makes the estimate unbiased (and
    able to come out negative when both sets share a distribution). gamma defaults to 1/F."""
    x, y = _as_2d_float64(x, "x"), _as_2d_float64(y, "y")
    _check_pair(x, y, min_rows=2)
    gamma = 1.0 / x.shape[1] if gamma is None else float(gamma)
    return _mmd2_unbiased(x, y, degree=degree, gamma=gamma, coef0=coef0)


def kernel_inception_distance(
    feats_a: np.ndarray, feats_b: np.ndarray, *, degree: int = 3, gamma: float | None = None, coef0: float = 1.0,
    num_subsets: int = 50, subset_size: int = 1000, rng: np.random.Generator,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased polynomial-kernel MMD^2, k(u, v) = (u.v / F + 1)^3 by
    default, averaged over `num_subsets` random subsets of `subset_size` points drawn without
    replacement from each set (capped at the smaller set's size).

    Returns (mean, std) over the subsets; the standard error of the mean is std / sqrt(num_subsets).
    The mean is zero in expectation for two draws of one distribution (negative values occur)."""
    a, b = _as_2d_float64(feats_a, "feats_a"), _as_2d_float64(feats_b, "feats_b")
    _check_pair(a, b, min_rows=2)
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"need num_subsets >= 1 and subset_size >= 2; got {num_subsets}, {subset_size}")
    size = min(subset_size, a.shape[0], b.shape[0])
    kernel = {"degree": degree, "gamma": 1.0 / a.shape[1] if gamma is None else float(gamma), "coef0": coef0}
    values = np.empty(num_subsets)
    for k in range(num_subsets):
        ia = rng.choice(a.shape[0], size, replace=False)
        ib = rng.choice(b.shape[0], size, replace=False)
        values[k] = _mmd2_unbiased(a[ia], b[ib], **kernel)
    return float(values.mean()), float(values.std())


def _mean_pairwise_distance(x: torch.Tensor, y: torch.Tensor, *, same_set: bool, chunk: int = 2048) -> float:
    """Mean ||x_i - y_j|| over all pairs; over pairs i != j when x and y are the same set."""
    total = 0.0
    for i in range(0, x.shape[0], chunk):  # chunked so [chunk, M] is the largest block held
        total += float(torch.cdist(x[i : i + chunk], y).sum())
    count = x.shape[0] * y.shape[0]
    if same_set:  # the diagonal contributes zeros: only the number of pairs changes
        count -= x.shape[0]
    return total / count


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Energy distance 2 E||X - Y|| - E||X - X'|| - E||Y - Y'|| (Székely & Rizzo 2013) of [N, F], [M, F].

    The cross term is a V-statistic over all N*M pairs and the within-set terms are U-statistics
    (pairs i != j), so the estimate is unbiased: zero in expectation for one distribution (it can
    come out slightly negative) and positive for different ones. Cost O((N + M)^2 F), chunked."""
    a, b = _as_2d_float64(x, "x"), _as_2d_float64(y, "y")
    _check_pair(a, b, min_rows=2)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return (2.0 * _mean_pairwise_distance(ta, tb, same_set=False)
            - _mean_pairwise_distance(ta, ta, same_set=True) - _mean_pairwise_distance(tb, tb, same_set=True))


def sliced_wasserstein(x: np.ndarray, y: np.ndarray, *, num_projections: int = 256,
                       rng: np.random.Generator) -> float:
    """Sliced 2-Wasserstein distance SW2 = sqrt(E_u W2^2(u.X, u.Y)), u uniform on the sphere, over
    `num_projections` random directions.

    In 1-D, W2 pairs the sorted samples. Equal set sizes pair order statistics directly; unequal
    sizes compare the two empirical quantile functions (linear interpolation) on a common grid of
    max(N, M) levels. Biased upward for finite sets (it is > 0 for two draws of one distribution,
    shrinking like N^-1/2)."""
    a, b = _as_2d_float64(x, "x"), _as_2d_float64(y, "y")
    _check_pair(a, b, min_rows=1)
    dirs = rng.standard_normal((a.shape[1], num_projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)  # [F, P] unit columns
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)  # [N, P], [M, P]
    if pa.shape[0] != pb.shape[0]:
        size = max(pa.shape[0], pb.shape[0])
        levels = (np.arange(size) + 0.5) / size
        pa, pb = np.quantile(pa, levels, axis=0), np.quantile(pb, levels, axis=0)  # [size, P] each
    return float(np.sqrt(((pa - pb) ** 2).mean()))
