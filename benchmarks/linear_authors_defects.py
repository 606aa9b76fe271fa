"""Measure the two defects of the authors' public code for the linear one-step model (docs/results/linear.md).

I-Halder/a-solvable-generative-model-with-a-linear-one-step-denoiser, LDM.py (read, not copied): data
N(10 * 1, I_100), n in {25, 50, 75, 100}, N = 10^4 population points, T = 2.  Their E = int rho_D^2 -
2 int rho_D rho_G (up to a common factor (2 pi)^((d-1)/2), which does not change the sign of Delta) has
(1) the generated covariance written s^2 beta1^T beta1 instead of s^2 beta1 beta1^T, and
(2) the normalization of int rho_D^2 -- eps = sigma N^(-1/d) and (2 eps^2)^(d/2) -- in float32.
This script recomputes P(Delta > 0) on the same draws four ways: exact (float64, beta1 beta1^T), with the
transposed covariance, with the float32 normalization, and with both (the authors' code).  Everything
else is diffmem's float64 closed form (diffmem.metrics.l2, diffmem.families.one_step).

Run: PYTHONPATH=src python benchmarks/linear_authors_defects.py [--repeats 100] [--out defects.json]
(~10 s per repeat on a shared 2-core CPU, dominated by the N^2 d population self-overlap).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from diffmem.families.one_step import fit_one_step, one_step_generated, one_step_noise
from diffmem.metrics.l2 import halder_width, log_kde_gaussian_overlap, log_kde_overlap


def self_terms(points: np.ndarray) -> tuple[float, float]:
    """(diagonal, off-diagonal) parts of int rho_D^2 in the authors' scale, 1 / (sqrt(2 pi) (2 eps^2)^(d/2) N^2)
    * pair_sum, exact (float64, the diagonal from eps = N^(-1/d) analytically)."""
    num, dim = points.shape
    eps = halder_width(num, dim)
    scale = 0.5 * (dim - 1) * math.log(2 * math.pi)
    diag = math.exp(-0.5 * dim * math.log(4 * math.pi) + math.log(num) - math.log(num) + scale)  # (sigma/eps)^d / N = 1
    off = math.exp(log_kde_overlap(points, points, eps_x=eps, eps_y=eps, exclude_diagonal=True) + scale)
    return diag, off


def float32_diag(num: int, dim: int) -> float:
    """The diagonal part as the authors' code computes it: pair_sum (= N to float32 precision: the
    off-diagonal terms are ~e^{-d/2}) over a float32 normalization sqrt(2 pi) (2 eps^2)^(d/2) N^2 with
    eps = float32(N^(-1/d)); its ~1e-7 relative rounding is amplified by the power d / 2."""
    eps = np.float32(1.0) * np.float32((1.0 / num) ** (1.0 / dim))
    norm = np.float32(math.sqrt(2 * math.pi)) * (np.float32(2.0) * eps * eps) ** np.float32(dim / 2)
    return float(np.float32(num) / (norm * np.float32(num) ** 2))


def cross_term(points: np.ndarray, eps: float, mean: np.ndarray, cov: np.ndarray) -> float:
    """2 int rho_D rho_G in the authors' scale (float64 in their code too)."""
    d = points.shape[1]
    return 2.0 * math.exp(log_kde_gaussian_overlap(points, eps=eps, mean=mean, cov=cov) + 0.5 * (d - 1) * math.log(2 * math.pi))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--num-population", type=int, default=10_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 75, 100])
    parser.add_argument("--mean", type=float, default=10.0)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    d, big_n, time_t = args.dim, args.num_population, 2.0
    variants = ("exact", "transposed", "float32", "authors")
    signs = {v: np.zeros((len(args.sizes), args.repeats)) for v in variants}
    rel = {"rounding": {n: [] for n in args.sizes}, "signal": {n: [] for n in args.sizes}}
    eps_o = halder_width(big_n, d)
    start = time.monotonic()
    for r in range(args.repeats):
        rng = np.random.default_rng([r, 0xDEF])
        pop = args.mean + rng.standard_normal((big_n, d))
        diag_o, off_o = self_terms(pop)
        for i, n in enumerate(args.sizes):
            train = args.mean + rng.standard_normal((n, d))
            fit = fit_one_step(train, one_step_noise(train, rng.standard_normal(train.shape), time=time_t))
            mean, cov = one_step_generated(fit, train, time=time_t)
            s2 = np.trace(cov) / np.sum(fit.beta1**2)  # cov = s^2 beta1 beta1^T
            cov_t = s2 * fit.beta1.T @ fit.beta1  # the authors' sigma^T sigma with sigma = s beta1
            eps_t = halder_width(n, d)
            diag_t, off_t = self_terms(train)
            # diagonal difference: 0 exactly in float64 (both are 1 in units of (4 pi)^(-d/2)); the float32 one
            diag_diff32 = float32_diag(n, d) - float32_diag(big_n, d)
            for v in variants:
                c = cov_t if v in ("transposed", "authors") else cov
                rest = (off_t - cross_term(train, eps_t, mean, c)) - (off_o - cross_term(pop, eps_o, mean, c))
                delta = rest + (diag_diff32 if v in ("float32", "authors") else 0.0)
                signs[v][i, r] = np.sign(delta)
                if v == "exact":
                    rel["signal"][n].append(abs(rest) / diag_t)
            rel["rounding"][n].append(abs(diag_diff32) / diag_t)
        print(f"repeat {r + 1}/{args.repeats} ({time.monotonic() - start:.0f} s)", flush=True)
    table = {v: {int(n): float(0.5 + 0.5 * signs[v][i].mean()) for i, n in enumerate(args.sizes)} for v in variants}
    summary = {
        "dim": d, "num_population": big_n, "repeats": args.repeats, "data_mean": args.mean,
        "p_delta_pos": table,
        "binomial_se_max": float(0.5 / math.sqrt(args.repeats)),
        "float32_rounding_of_the_diagonal_difference_relative_to_the_diagonal": {
            int(n): float(np.median(v)) for n, v in rel["rounding"].items()},
        "median_true_delta_relative_to_the_diagonal": {int(n): float(np.median(v)) for n, v in rel["signal"].items()},
        "run_time_s": round(time.monotonic() - start, 1),
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(summary, fh, indent=1)


if __name__ == "__main__":
    main()
