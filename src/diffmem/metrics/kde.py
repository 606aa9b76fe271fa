"""Gaussian kernel density estimates and divergences between densities, for E_TG and E_OG.

Halder & Pehlevan (withdrawn ICLR 2025 submission; reworked as arXiv 2411.17807) compare
kernel-smoothed densities: rho_T of the n training points, rho_G of the generated samples and
rho_O of the population (a KDE of N >> n fresh samples, or the exact density when it is known).
E_TG = D(rho_T, rho_G) and E_OG = D(rho_O, rho_G); a model that memorizes has E_TG < E_OG (its
samples sit on the training points), one that generalizes has E_TG > E_OG. D is the squared
Hellinger distance H^2 = 1 - int sqrt(p q) (in [0, 1]) or KL(p || q), both estimated by Monte Carlo
with a standard error.

A density here is any object with `logpdf(x [M, d]) -> [M]` and `sample(num, rng) -> [num, d]`:
a `KDE`, an exact density from `exact.py`, or `CallableDensity` wrapping two functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from diffmem.metrics.l2 import l2_kde_kde

__all__ = ["Density", "KDE", "CallableDensity", "bandwidth", "kde_logpdf", "hellinger_sq", "kl_divergence",
           "e_tg_e_og"]


@runtime_checkable
class Density(Protocol):
    """What the divergences need of each side: log density values and samples."""

    def logpdf(self, x: np.ndarray) -> np.ndarray: ...  # [M, d] -> [M]

    def sample(self, num: int, rng: np.random.Generator) -> np.ndarray: ...  # -> [num, d]


def bandwidth(points: np.ndarray, *, rule: str | float) -> float:
    """Isotropic kernel width h for a set of N points [N, d]; sigma is the per-dimension standard
    deviation (ddof=1) averaged over the d dimensions.

    - 'halder': h = sigma N^(-1/d), the typical spacing of N points in d dims (nearest-neighbour
      scale), the prescription used for E_TG / E_OG: each KDE resolves its own points;
    - 'scott': h = sigma N^(-1/(d+4)), Scott's rule (MISE-optimal order for a Gaussian);
    - 'silverman': h = sigma (4 / (N (d + 2)))^(1/(d+4)), Silverman's multivariate rule of thumb;
    - a positive number: that width, for every set."""
    if not isinstance(rule, str):
        if not rule > 0:
            raise ValueError(f"a fixed bandwidth must be positive; got {rule}")
        return float(rule)
    pts = np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[0] < 2:
        raise ValueError(f"bandwidth rules need [N, d] points with N >= 2; got shape {pts.shape}")
    n, d = pts.shape
    sigma = float(pts.std(axis=0, ddof=1).mean())
    if rule == "halder":
        return sigma * n ** (-1.0 / d)
    if rule == "scott":
        return sigma * n ** (-1.0 / (d + 4))
    if rule == "silverman":
        return sigma * (4.0 / (n * (d + 2))) ** (1.0 / (d + 4))
    raise ValueError(f"unknown bandwidth rule {rule!r}; use 'halder', 'scott', 'silverman' or a number")


@torch.no_grad()
def kde_logpdf(x: np.ndarray, centers: np.ndarray, *, bandwidth: float, chunk: int = 2048,
               center_chunk: int = 8192) -> np.ndarray:
    """log (1/N) sum_i N(x; c_i, h^2 I) for each row of x [M, d] -> [M], in float64.

    Log-sum-exp over the centers keeps points far from every center finite; x is processed in
    blocks of `chunk` rows and the centers in blocks of `center_chunk`, so the largest temporary is
    [chunk, center_chunk] (128 MiB at the defaults) whatever M and N are."""
    tx = torch.as_tensor(np.asarray(x, np.float64))  # [M, d]
    tc = torch.as_tensor(np.asarray(centers, np.float64))  # [N, d]
    if tx.ndim != 2 or tc.ndim != 2 or tx.shape[1] != tc.shape[1]:
        raise ValueError(f"x and centers must be [M, d] and [N, d]; got {tuple(tx.shape)}, {tuple(tc.shape)}")
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive; got {bandwidth}")
    d, n = tx.shape[1], tc.shape[0]
    const = -math.log(n) - 0.5 * d * math.log(2 * math.pi * bandwidth**2)
    scale = -0.5 / bandwidth**2
    out = torch.empty(tx.shape[0], dtype=torch.float64)
    for i in range(0, tx.shape[0], chunk):
        block = tx[i : i + chunk]
        acc = torch.full((block.shape[0],), -math.inf, dtype=torch.float64)  # running log-sum-exp
        for j in range(0, n, center_chunk):
            logits = torch.cdist(block, tc[j : j + center_chunk]).square_().mul_(scale)  # [m, c]
            acc = torch.logaddexp(acc, torch.logsumexp(logits, dim=1))
        out[i : i + block.shape[0]] = acc + const
    return out.numpy()


@dataclass(frozen=True)
class KDE:
    """An isotropic Gaussian KDE (1/N) sum_i N(c_i, h^2 I), a `Density`."""

    centers: np.ndarray  # [N, d]
    bandwidth: float

    @classmethod
    def fit(cls, points: np.ndarray, *, rule: str | float) -> KDE:
        """The KDE of `points` [N, d] with the width `bandwidth(points, rule=rule)`."""
        pts = np.asarray(points, np.float64)
        return cls(pts, bandwidth(pts, rule=rule))

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        return kde_logpdf(x, self.centers, bandwidth=self.bandwidth)

    def sample(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """A uniformly chosen center plus N(0, h^2 I) noise: exact draws from the KDE."""
        idx = rng.integers(0, self.centers.shape[0], size=num)
        return self.centers[idx] + self.bandwidth * rng.standard_normal((num, self.centers.shape[1]))


@dataclass(frozen=True)
class CallableDensity:
    """A `Density` from a log-pdf function ([M, d] -> [M]) and a sampler ((num, rng) -> [num, d])."""

    logpdf_fn: Callable[[np.ndarray], np.ndarray]
    sample_fn: Callable[[int, np.random.Generator], np.ndarray]

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.logpdf_fn(x), np.float64)

    def sample(self, num: int, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(self.sample_fn(num, rng), np.float64)


def _check_density(obj, name: str) -> None:
    if not isinstance(obj, Density):
        raise TypeError(f"{name} must have logpdf(x) and sample(num, rng) (a KDE, an exact density or a "
                        f"CallableDensity); got {type(obj).__name__}")


def hellinger_sq(p: Density, q: Density, *, num_mc: int = 4000, rng: np.random.Generator) -> tuple[float, float]:
    """Squared Hellinger distance H^2(p, q) = 1 - int sqrt(p q) in [0, 1], by importance sampling.

    The proposal is the mixture m = (p + q)/2, sampled stratified: half the points from p, half from
    q. With w = sqrt(p q) / m, int sqrt(p q) = E_m[w] = (E_p[w] + E_q[w]) / 2. The weights lie in
    [0, 1] (geometric <= arithmetic mean), so the estimate is bounded and its variance finite even
    for far-apart or very peaked densities. Returns (estimate, standard error of the estimate)."""
    _check_density(p, "p")
    _check_density(q, "q")
    if num_mc < 4:
        raise ValueError(f"num_mc must be >= 4; got {num_mc}")
    half = num_mc // 2
    means, variances = [], []
    for side, count in ((p, half), (q, num_mc - half)):
        x = side.sample(count, rng)
        lp, lq = np.asarray(p.logpdf(x), np.float64), np.asarray(q.logpdf(x), np.float64)
        log_m = np.logaddexp(lp, lq) - math.log(2.0)
        w = np.exp(0.5 * (lp + lq) - log_m)  # [count] in [0, 1]
        means.append(w.mean())
        variances.append(w.var(ddof=1) / count)
    # each stratum has weight 1/2 in the mixture
    estimate = 1.0 - 0.5 * (means[0] + means[1])
    return float(estimate), float(0.5 * math.sqrt(variances[0] + variances[1]))


def kl_divergence(p: Density, q: Density, *, num_mc: int = 4000, rng: np.random.Generator) -> tuple[float, float]:
    """KL(p || q) = E_p[log p - log q] by Monte Carlo from p; returns (estimate, standard error).

    Unbounded: when q is a KDE with a narrow bandwidth and p puts mass between q's centers the
    values (and their errors) grow large, which is the intended signal but a noisy one."""
    _check_density(p, "p")
    _check_density(q, "q")
    if num_mc < 2:
        raise ValueError(f"num_mc must be >= 2; got {num_mc}")
    x = p.sample(num_mc, rng)
    diff = np.asarray(p.logpdf(x), np.float64) - np.asarray(q.logpdf(x), np.float64)
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(diff.size))


_DIVERGENCES = {"hellinger": hellinger_sq, "kl": kl_divergence}


def _e_tg_e_og_l2(train, generated, population, *, bandwidth_rule) -> dict[str, float]:
    """Halder & Pehlevan's L2 distance (``diffmem.metrics.l2``) with per-set widths, rho_G the KDE of the
    samples at its own width; closed form, so the standard errors are 0.  sigma_ref (the unit) is the
    population's per-dimension standard deviation."""
    if isinstance(population, Density):
        raise ValueError("divergence 'l2' needs population samples for rho_O (quality.population: samples)")
    sets = {name: np.asarray(v, np.float64) for name, v in (("t", train), ("g", generated), ("o", population))}
    widths = {name: bandwidth(v, rule=bandwidth_rule) for name, v in sets.items()}
    sigma = float(sets["o"].std(axis=0, ddof=1).mean())
    e = {name: l2_kde_kde(sets[name], eps_x=widths[name], y=sets["g"], eps_y=widths["g"], sigma_ref=sigma)["e"]
         for name in ("t", "o")}
    return {"e_tg": e["t"], "e_og": e["o"], "e_tg_se": 0.0, "e_og_se": 0.0, "delta": e["t"] - e["o"], "delta_se": 0.0,
            "bandwidth_train": widths["t"], "bandwidth_generated": widths["g"], "bandwidth_population": widths["o"]}


def e_tg_e_og(train: np.ndarray, generated: np.ndarray, population_or_exact, *,
              bandwidth_rule: str | float = "halder", bandwidth_from: str = "train", smooth_exact: bool = True,
              divergence: str = "hellinger", num_mc: int = 4000, rng: np.random.Generator) -> dict[str, float]:
    """E_TG = D(rho_T, rho_G) and E_OG = D(rho_O, rho_G) with Monte Carlo standard errors.

    train [n, d], generated [m, d]; `population_or_exact` is either an array [N, d] of fresh
    population samples (smoothed by a KDE like the other two) or a `Density` (e.g. an exact density
    from `exact.py`) standing for rho_O.

    Kernel widths (`bandwidth_rule` as in `bandwidth`):
    - bandwidth_from='train' (default): the rule is applied to the training set and that one width
      smooths all three densities, so all are compared at the resolution n training points allow.
      A memorizing model then has rho_G ~ rho_T (E_TG ~ 0), and a generalizing one has rho_G ~ rho_O.
    - bandwidth_from='each': every set gets the width its rule gives for its own size. With size-
      dependent rules ('halder') the large sets get narrow, spiky KDEs whose mutual distance is
      itself large, which can hide the E_TG > E_OG of a generalizing model: use with care.
    With smooth_exact (default), an exact density offering `smoothed(h)` is convolved with the same
    kernel as rho_G (width of rho_G), so smoothing alone does not count as a difference.
    divergence: 'hellinger' (H^2, in [0, 1]) or 'kl' (KL(rho_T || rho_G), KL(rho_O || rho_G)).

    Returns {'e_tg', 'e_og', 'e_tg_se', 'e_og_se', 'delta' = e_tg - e_og, 'delta_se',
    'bandwidth_train', 'bandwidth_generated', 'bandwidth_population'}; the last is the KDE width
    or smoothing width of rho_O, nan for an exact density used unsmoothed."""
    if divergence == "l2":
        return _e_tg_e_og_l2(train, generated, population_or_exact, bandwidth_rule=bandwidth_rule)
    if divergence not in _DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; use one of {sorted(_DIVERGENCES)} or 'l2'")
    if bandwidth_from not in ("train", "each"):
        raise ValueError(f"bandwidth_from must be 'train' or 'each'; got {bandwidth_from!r}")
    div = _DIVERGENCES[divergence]
    rho_t = KDE.fit(train, rule=bandwidth_rule)

    def smooth(points) -> KDE:
        if bandwidth_from == "train":
            return KDE(np.asarray(points, np.float64), rho_t.bandwidth)
        return KDE.fit(points, rule=bandwidth_rule)

    rho_g = smooth(generated)
    h_pop = math.nan
    if isinstance(population_or_exact, Density):
        rho_o = population_or_exact
        if smooth_exact and hasattr(rho_o, "smoothed"):
            rho_o, h_pop = rho_o.smoothed(rho_g.bandwidth), rho_g.bandwidth
    else:
        rho_o = smooth(population_or_exact)
        h_pop = rho_o.bandwidth
    e_tg, se_tg = div(rho_t, rho_g, num_mc=num_mc, rng=rng)
    e_og, se_og = div(rho_o, rho_g, num_mc=num_mc, rng=rng)
    return {
        "e_tg": e_tg, "e_og": e_og, "e_tg_se": se_tg, "e_og_se": se_og,
        # the two estimates use independent draws, so their errors add in quadrature
        "delta": e_tg - e_og, "delta_se": math.hypot(se_tg, se_og),
        "bandwidth_train": rho_t.bandwidth, "bandwidth_generated": rho_g.bandwidth, "bandwidth_population": h_pop,
    }
