"""Memorization scoring: exact nearest-neighbour distances and the f_mem criterion.

A generated sample x is memorized when ||x - a1|| / ||x - a2|| < k, a1 and a2 its nearest and
second-nearest training points (Euclidean, data space), k = 1/3 (Yoon et al. 2023; arXiv 2505.17638,
Sec. 3). The search is exact and chunked over samples: candidates come from a float32 matrix
product, then the distances of the few best candidates are recomputed in float64 and re-sorted,
so the matmul's rounding cannot swap near-ties or spoil d1 for a copied sample.

Exact for any offset and scale: both sets are first centred by the reference mean (in float64), so
the float32 stage works on the data's spread, not on its distance from the origin; and the float32
stage's rounding error is bounded (`float32_rank_error`). A row whose candidate list might miss a
point within twice that bound of its k-th best is widened to every such point before the float64
recheck, so the result equals a float64 brute force whatever the data.
"""

from __future__ import annotations

import numpy as np
import torch

FLOAT32_EPS = 2.0 ** -24  # unit roundoff of float32


def float32_rank_error(*, dim: int, query_norm: torch.Tensor, ref_norm_max: float) -> torch.Tensor:
    """Bound on |float32 - exact| of the ranking key ||r||^2 - 2 q.r, per query, over all r.

    Dot products of length D in floating point err by at most gamma_D |x||y| (Higham, Accuracy and
    Stability of Numerical Algorithms, Eq. 3.5, gamma_D = D u / (1 - D u)); the key has two of them
    plus the rounding of the centred inputs to float32 (2u relative each) and of the final addition.
    A factor 2 of margin covers the GEMM's blocked summation order."""
    gamma = (dim + 4) * FLOAT32_EPS / (1 - (dim + 4) * FLOAT32_EPS)
    return 2.0 * gamma * (ref_norm_max**2 + 2.0 * query_norm * ref_norm_max)


@torch.no_grad()
def nearest_neighbors(
    queries: np.ndarray, reference: np.ndarray, *, k: int = 2, chunk_size: int = 1024,
    device: str | torch.device = "cpu", num_candidates: int = 8, return_stats: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours: distances [M, k] (float64, ascending) and indices [M, k].

    With `return_stats`, a third value counts the rows whose candidate list was widened beyond
    `num_candidates` because the float32 stage could not rank them with certainty. The reference is
    held twice on `device` (the caller's values for the float64 recheck, the centred float32 copy
    for the matrix product). Exact as long as float64 resolves the data's spread at their offset
    (an offset below ~1e8 times the spread)."""
    if reference.shape[0] < k:
        raise ValueError(f"need at least {k} reference points, got {reference.shape[0]}")
    device = torch.device(device)
    num_ref = reference.shape[0]
    ref_exact = torch.as_tensor(reference, device=device).reshape(num_ref, -1)  # [R, D], the caller's values
    dim = ref_exact.shape[1]
    # centring in float64 by the reference mean: ||q - r|| is unchanged, but the float32 key
    # ||r||^2 - 2 q.r no longer carries the offset's magnitude (data at 1000 +- 1 would lose the
    # ranking to rounding of ~1e6-sized terms)
    block = max(1, (1 << 24) // max(dim, 1))  # rows per float64 block (~128 MiB), so no full float64 copy
    mean = sum(ref_exact[i : i + block].double().sum(dim=0) for i in range(0, num_ref, block)) / num_ref  # [D]
    ref = torch.cat([(ref_exact[i : i + block].double() - mean).float() for i in range(0, num_ref, block)])  # [R, D]
    ref_sq = (ref * ref).sum(dim=1)  # [R]
    ref_norm_max = float(ref_sq.double().max().sqrt()) * (1 + 1e-6)
    c = min(max(num_candidates, k), num_ref)
    buf = torch.empty((min(chunk_size, queries.shape[0]), num_ref), dtype=torch.float32, device=device)
    dists, idxs, widened = [], [], 0
    for start in range(0, queries.shape[0], chunk_size):
        rows = queries[start : start + chunk_size]
        q64 = torch.as_tensor(rows, device=device).reshape(rows.shape[0], -1).double()  # [C, D]
        q = (q64 - mean).float()  # [C, D]
        # ||q - r||^2 = ||q||^2 + ||r||^2 - 2 q.r, and ||q||^2 is the same for every r of a row, so the
        # ranking needs only ||r||^2 - 2 q.r: one fused GEMM pass into a reused buffer (no page faults)
        approx = torch.addmm(ref_sq, q, ref.T, alpha=-2.0, out=buf[: q.shape[0]])  # [C, R]
        top = approx.topk(c, dim=1, largest=False)
        cand = top.indices  # [C, c], ascending approx
        diff = ref_exact[cand].double()  # [C, c, D]; the squares and the sum are in place on this buffer,
        torch.sub(q64[:, None, :], diff, out=diff)  # the same roundings as (q - r).pow(2) (torch squares
        exact = diff.mul_(diff).sum(dim=2).sqrt_()  # with one product), less two [C, c, D] temporaries
        order = exact.argsort(dim=1)[:, :k]
        d_rows, i_rows = exact.gather(1, order), cand.gather(1, order)  # [C, k]
        if c < num_ref:
            # a true k-nearest point r has approx_r <= approx_(k) + 2 err (err bounds |approx - exact|
            # for every r); if the c-th candidate is still inside that window, points beyond the
            # list may belong to the k nearest, so the row is widened to the whole window
            err = float32_rank_error(dim=dim, query_norm=(q.double() ** 2).sum(dim=1).sqrt(),
                                     ref_norm_max=ref_norm_max)  # [C]
            limit = top.values[:, k - 1].double() + 2 * err  # [C]
            for row in torch.nonzero(top.values[:, -1].double() <= limit).flatten().tolist():
                idx_w = torch.nonzero(approx[row].double() <= limit[row]).flatten()  # [c'] >= c
                d_w = (q64[row] - ref_exact[idx_w].double()).pow(2).sum(dim=1).sqrt()  # [c']
                o = d_w.argsort()[:k]
                d_rows[row], i_rows[row] = d_w[o], idx_w[o]
                widened += 1
        dists.append(d_rows.cpu().numpy())
        idxs.append(i_rows.cpu().numpy())
    out = np.concatenate(dists), np.concatenate(idxs)
    return (*out, widened) if return_stats else out


def memorized(d1: np.ndarray, d2: np.ndarray, *, ratio_threshold: float) -> np.ndarray:
    """Boolean mask of memorized samples, d1/d2 < ratio_threshold (d2 = 0 counts as memorized only if d1 = 0)."""
    return distance_ratio(d1, d2) < ratio_threshold


def distance_ratio(d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d2 > 0, d1 / np.where(d2 > 0, d2, 1.0), np.where(d1 > 0, np.inf, 0.0))


def fraction_with_se(mask: np.ndarray, *, num_bootstrap: int, rng: np.random.Generator) -> tuple[float, float]:
    """Mean of a boolean mask over its last axis and its bootstrap standard error.

    A boolean mask's resamples are counted, not averaged as floats: a sum of m zeros and ones is exact in
    float64 whatever its order, so count / m is the float mean bit for bit, without an [B, m] float64 array."""
    mask = np.asarray(mask)
    m = mask.shape[-1]
    draws = rng.integers(0, m, size=(num_bootstrap, m))
    if mask.dtype == bool:
        boot = np.count_nonzero(mask[draws], axis=1) / m
        mean = np.count_nonzero(mask) / mask.size
    else:
        mask = mask.astype(np.float64)
        boot, mean = mask[draws].mean(axis=1), mask.mean()
    return float(mean), float(boot.std(ddof=1)) if num_bootstrap > 1 else 0.0
