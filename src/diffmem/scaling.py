"""Does a power law tau = A n^b describe onset times tau(n, seed)? Diagnostics of the fit.

Pure functions on `n` [K] and `tau` [K, S] (NaN = censored or missing), all in log-log:
- `exponent_draws`: bootstrap draws of the least-squares exponent, resampling seeds (the columns,
  paired across n as the runs of one seed share its nested subsets) and, with `resample_n`, the n
  points too. Seeds alone measure the seed scatter only, so their CI is tight around a misfit; when
  the n points are also resampled, a draw's exponent is the slope through a random subset of the n
  points, so the CI spans the local slopes when they disagree and stays tight when they agree.
- `local_slopes`: the slope between consecutive n of the per-n mean log tau, with a Welch t CI from
  the seed scatter at the two ends (conservative: the seeds of one run are positively correlated
  across n through the nested subsets and shared initialisation).
- `lack_of_fit`: the classical pure-error F test of the straight line in log-log: the residuals of
  the per-n means from the fitted line (K - 2 degrees of freedom) against the scatter of the seeds
  around their per-n means (N - K degrees of freedom). A small p-value says the points scatter
  about the power law beyond what seed noise explains.
- `power_law_holds`: the flag the fit stores, from the test, the number of n and censoring
  (`POWER_LAW_CRITERION` says what it checks).
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import special

POWER_LAW_CRITERION = (
    "power law ok when: at least 3 values of n with a reading and 2 seeds at one n at least (so the "
    "test has degrees of freedom), no censored run, and the lack-of-fit F test of the per-n mean "
    "log tau against the seed scatter gives p >= lack_of_fit_alpha"
)


# The two distributions the tests need, from scipy.special rather than scipy.stats, whose import costs a job ~1
# CPU-second more (its ~100 distributions build their docstrings): the same functions that scipy.stats.t.ppf
# and scipy.stats.f.sf call, with their answers at the ends of the domain (tests/test_scaling.py holds them to
# scipy.stats bit for bit).
def t_quantile(q: float, dof: float) -> float:
    """Student's t quantile at probability `q` with `dof` degrees of freedom (scipy.stats.t.ppf)."""
    if not (dof > 0 and 0 <= q <= 1):
        return float("nan")
    if q == 0 or q == 1:
        return float("inf") if q == 1 else float("-inf")
    return float(special.stdtrit(dof, q))


def f_survival(f: float, dfn: float, dfd: float) -> float:
    """P(F > f) for Fisher's F with (dfn, dfd) degrees of freedom (scipy.stats.f.sf)."""
    if not (dfn > 0 and dfd > 0) or np.isnan(f):
        return float("nan")
    if f <= 0 or f == np.inf:
        return 1.0 if f <= 0 else 0.0
    return float(special.fdtrc(dfn, dfd, f))


def log_readings(n: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log n [K], log tau [K, S]) with NaN where tau is missing, censored or not positive."""
    n = np.asarray(n, float)
    tau = np.atleast_2d(np.asarray(tau, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_tau = np.where(np.isfinite(tau) & (tau > 0), np.log(tau), np.nan)
    return np.log(n), log_tau


def weighted_slopes(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least-squares slopes of y on x for a stack of weights: x [K], y [K, S], w [B, K, S] -> [B].

    NaN where the weighted points span fewer than two distinct x."""
    finite = np.isfinite(y)
    w = w * finite[None]
    y0 = np.where(finite, y, 0.0)[None]
    xx = x[None, :, None]
    sw = w.sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        x_mean = (w * xx).sum(axis=(1, 2)) / sw
        y_mean = (w * y0).sum(axis=(1, 2)) / sw
        dx = xx - x_mean[:, None, None]
        sxx = (w * dx**2).sum(axis=(1, 2))
        sxy = (w * dx * (y0 - y_mean[:, None, None])).sum(axis=(1, 2))
        slope = sxy / sxx
    scale = max(float(np.ptp(x)) ** 2, 1e-300) if x.size else 1.0
    return np.where(sxx > 1e-12 * scale, slope, np.nan)


def _counts(rng: np.random.Generator, num_draws: int, size: int) -> np.ndarray:
    """[num_draws, size] multiplicities of a resample with replacement of `size` items."""
    idx = rng.integers(0, size, size=(num_draws, size))
    counts = np.zeros((num_draws, size))
    np.add.at(counts, (np.arange(num_draws)[:, None], idx), 1.0)
    return counts


def exponent_draws(n: np.ndarray, tau: np.ndarray, *, num_bootstrap: int, rng: np.random.Generator,
                   resample_n: bool) -> np.ndarray:
    """[num_bootstrap] bootstrap exponents (NaN for draws that hold fewer than two distinct n)."""
    x, y = log_readings(n, tau)
    num_n, num_seeds = y.shape
    seeds = _counts(rng, num_bootstrap, num_seeds)  # [B, S]
    points = _counts(rng, num_bootstrap, num_n) if resample_n else np.ones((num_bootstrap, num_n))  # [B, K]
    return weighted_slopes(x, y, points[:, :, None] * seeds[:, None, :])


def percentile_ci(draws: np.ndarray, ci_level: float) -> tuple[float, float]:
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - ci_level) / 2
    return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha))


def local_slopes(n: np.ndarray, tau: np.ndarray, *, ci_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Slopes of the per-n mean log tau between consecutive n [K-1] and their Welch t CIs [K-1, 2].

    The CI is NaN where an end has fewer than two seeds; a segment with an end without any reading
    is NaN."""
    x, y = log_readings(n, tau)
    count = np.isfinite(y).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.nansum(y, axis=1) / np.maximum(count, 1), np.nan)
        var_mean = np.array([np.var(row[np.isfinite(row)], ddof=1) / c if c > 1 else np.nan
                             for row, c in zip(y, count)])  # variance of the per-n mean
    dx = np.diff(x)
    slope = np.diff(mean) / dx
    ci = np.full((slope.size, 2), np.nan)
    q = (1 + ci_level) / 2
    for i in range(slope.size):
        v0, v1 = var_mean[i], var_mean[i + 1]
        if not (np.isfinite(slope[i]) and np.isfinite(v0) and np.isfinite(v1)):
            continue
        se = np.sqrt(v0 + v1) / dx[i]
        if se == 0:
            ci[i] = slope[i]
            continue
        dof = (v0 + v1) ** 2 / (v0**2 / (count[i] - 1) + v1**2 / (count[i + 1] - 1))
        half = t_quantile(q, dof) * se
        ci[i] = slope[i] - half, slope[i] + half
    return slope, ci


def lack_of_fit(n: np.ndarray, tau: np.ndarray) -> dict[str, float]:
    """Pure-error lack-of-fit F test of log tau = a + b log n: {'f', 'p_value', 'df_lof', 'df_pe', 'rms_lof'}.

    rms_lof is the root mean square distance (in log tau) of the per-n means from the fitted line;
    p_value is NaN when the test has no degrees of freedom (fewer than 3 n or no repeated seeds).
    With no seed scatter at all (pure error 0), p is 1 for points exactly on the line, else 0."""
    x, y = log_readings(n, tau)
    count = np.isfinite(y).sum(axis=1)
    used = count > 0
    num_n, total = int(used.sum()), int(count.sum())
    out = {"f": np.nan, "p_value": np.nan, "df_lof": float(num_n - 2), "df_pe": float(total - num_n), "rms_lof": np.nan}
    if num_n < 2:
        return out
    mean = np.nansum(y[used], axis=1) / count[used]
    xs = x[used]
    b = weighted_slopes(xs, y[used], np.ones((1, *y[used].shape)))[0]
    a = np.sum(count[used] * (mean - b * xs)) / total  # the OLS line passes through the weighted means
    resid = mean - (a + b * xs)
    ss_lof = float(np.sum(count[used] * resid**2))
    ss_pe = float(np.nansum((y[used] - mean[:, None]) ** 2))
    out["rms_lof"] = float(np.sqrt(np.mean(resid**2)))
    df_lof, df_pe = num_n - 2, total - num_n
    if df_lof < 1 or df_pe < 1:
        return out
    if ss_pe <= 1e-24 * max(1.0, float(np.nansum(y**2))):
        out["f"] = np.inf if ss_lof > 1e-20 else 0.0
        out["p_value"] = 0.0 if ss_lof > 1e-20 else 1.0
        return out
    f = (ss_lof / df_lof) / (ss_pe / df_pe)
    out["f"] = float(f)
    out["p_value"] = f_survival(f, df_lof, df_pe)
    return out


def power_law_holds(*, p_value: float, df_lof: float, df_pe: float, num_censored: int, alpha: float) -> bool:
    """The flag of POWER_LAW_CRITERION."""
    return bool(df_lof >= 1 and df_pe >= 1 and num_censored == 0 and np.isfinite(p_value) and p_value >= alpha)


def table_rng(rng: np.random.Generator, n: np.ndarray, tau: np.ndarray) -> np.random.Generator:
    """A generator seeded by rng's seed (not its state) and the bytes of (n, tau)."""
    key = [zlib.crc32(np.ascontiguousarray(a, dtype=float).tobytes()) for a in (n, tau)]
    seed_seq = rng.bit_generator.seed_seq
    if not hasattr(seed_seq, "generate_state"):  # a generator built without a seed: nothing to key on
        return rng
    return np.random.default_rng([*seed_seq.generate_state(2), *key])


def diagnose(n: np.ndarray, tau: np.ndarray, *, num_bootstrap: int, ci_level: float, alpha: float,
             rng: np.random.Generator) -> dict:
    """Everything the fit stores about one tau(n, seed) table: exponent and prefactor (least squares
    over every reading), the seeds-only and the n-and-seeds bootstrap CIs, local slopes with CIs, the
    lack-of-fit test and the flag.

    The bootstrap draws come from a generator keyed by rng's seed and the table itself, not from rng's
    running state: the same table fitted anywhere (the headline tau_gen and its level in the levels
    group, a refit of one quantity alone) gets the same CIs, whatever was fitted before it."""
    rng = table_rng(rng, n, tau)
    x, y = log_readings(n, tau)
    finite = np.isfinite(y)
    b = weighted_slopes(x, y, np.ones((1, *y.shape)))[0]
    if np.isfinite(b):
        xs = np.broadcast_to(x[:, None], y.shape)[finite]
        prefactor = float(np.exp(np.mean(y[finite] - b * xs)))
    else:
        prefactor = float("nan")
    seeds_only = exponent_draws(n, tau, num_bootstrap=num_bootstrap, rng=rng, resample_n=False)
    both = exponent_draws(n, tau, num_bootstrap=num_bootstrap, rng=rng, resample_n=True)
    slope, slope_ci = local_slopes(n, tau, ci_level=ci_level)
    lof = lack_of_fit(n, tau)
    num_censored = int((~np.isfinite(np.asarray(tau, float))).sum())
    return {
        "exponent": float(b), "prefactor": prefactor,
        "exponent_ci": np.array(percentile_ci(both, ci_level)),
        "exponent_ci_seeds": np.array(percentile_ci(seeds_only, ci_level)),
        "local_slope": slope, "local_slope_ci": slope_ci,
        "lof_f": lof["f"], "lof_p_value": lof["p_value"], "lof_rms": lof["rms_lof"],
        "num_censored": num_censored,
        "power_law_ok": power_law_holds(p_value=lof["p_value"], df_lof=lof["df_lof"], df_pe=lof["df_pe"],
                                        num_censored=num_censored, alpha=alpha),
    }


def collapse_test(n: np.ndarray, tau: np.ndarray) -> float:
    """p-value of an F test that groups share one line in log-log: tau [G, K, S] (group, n, seed).

    Compares one common line (intercept and slope) with one intercept per group and a common slope,
    on the per-(group, n) means against the seed scatter within them. For a width sweep with tau*W
    as tau, a small p says that tau_mem * W differs between widths: the widths do not collapse.
    NaN when the test has no degrees of freedom."""
    x = np.log(np.asarray(n, float))
    groups = [log_readings(n, t)[1] for t in np.asarray(tau, float)]  # each [K, S]
    count = np.array([np.isfinite(y).sum(axis=1) for y in groups])  # [G, K]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.array([np.nansum(y, axis=1) for y in groups]) / count  # [G, K]
    ss_pe = float(sum(np.nansum((y - m[:, None]) ** 2) for y, m in zip(groups, mean)))
    cells = count > 0
    num_groups = int(cells.any(axis=1).sum())
    df_pe = int(count.sum() - cells.sum())
    if num_groups < 2 or df_pe < 1 or ss_pe <= 0:
        return float("nan")
    w = np.where(cells, count, 0.0)
    m0 = np.where(cells, mean, 0.0)
    xx = np.broadcast_to(x, w.shape)

    def ss_resid(intercept_per_group: bool) -> float:
        axis = 1 if intercept_per_group else None
        sw = w.sum(axis=axis, keepdims=True)
        xm = (w * xx).sum(axis=axis, keepdims=True) / sw
        ym = (w * m0).sum(axis=axis, keepdims=True) / sw
        slope = (w * (xx - xm) * (m0 - ym)).sum() / (w * (xx - xm) ** 2).sum()
        return float((w * (m0 - ym - slope * (xx - xm)) ** 2).sum())

    f = ((ss_resid(False) - ss_resid(True)) / (num_groups - 1)) / (ss_pe / df_pe)
    return f_survival(f, num_groups - 1, df_pe)



def power_law_fit(n: np.ndarray, tau: np.ndarray) -> tuple[float, float]:
    """Least-squares fit of log tau = log A + b log n over finite entries; returns (A, b)."""
    n, tau = np.asarray(n, float).ravel(), np.asarray(tau, float).ravel()
    ok = np.isfinite(tau) & (tau > 0) & (n > 0)
    if np.unique(n[ok]).size < 2:
        return float("nan"), float("nan")
    b, log_a = np.polyfit(np.log(n[ok]), np.log(tau[ok]), 1)
    return float(np.exp(log_a)), float(b)
