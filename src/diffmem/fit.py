"""Onset times and their scaling with n: tau_mem(n, seed), tau_gen(n, seed) and fits tau = A n^b.

tau_mem is the first checkpoint step at which f_mem reaches a threshold, linearly interpolated in
log(step) between that checkpoint and the one before (Bonnaire et al. 2025, arXiv 2505.17638,
Sec. 3, use the onset of f_mem; a threshold makes it robust to noise). A run that never reaches it
is censored: tau_mem is NaN and the censored flag is set; censored runs are left out of the fit
(their tau_mem is only known to exceed the last step, so the fitted exponent is then a lower
bound, said in the file's attrs).

tau_gen (when the cube has a quality metric, e.g. `fd_classifier`) is the first step at which the
metric has closed all but a fraction `tau_gen_tolerance` of the gap between its first and its best
value over the run (or crosses `tau_gen_threshold`), interpolated in log-step the same way.

The exponent's confidence interval resamples seeds with replacement (the independent units), refits
each draw in log-log by least squares, and takes percentiles.

Run: `diffmem fit --cube cube.nc --fit-cfg '<json>' --out fit.nc`
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import xarray as xr

from diffmem import names
from diffmem.config import ConfigError, FitConfig, read_json_arg
from diffmem.io import NETCDF_ENGINE, atomic_to_netcdf, cf_global_attrs, fail


def onset_step(steps: np.ndarray, values: np.ndarray, *, threshold: float) -> float:
    """First step where `values` >= threshold, interpolated in log-step; NaN if never reached.

    Step 0 takes part as the left end only if it is below the threshold; interpolation from step 0
    uses step 1 as its log position (log 0 is undefined)."""
    values = np.asarray(values, dtype=float)
    hit = np.flatnonzero(np.nan_to_num(values, nan=-np.inf) >= threshold)
    if hit.size == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0:
        return float(steps[0])
    s0, s1 = max(float(steps[i - 1]), 1.0), float(steps[i])
    v0, v1 = values[i - 1], values[i]
    if not np.isfinite(v0) or v1 == v0:
        return s1
    frac = (threshold - v0) / (v1 - v0)
    return float(np.exp(np.log(s0) + frac * (np.log(s1) - np.log(s0))))


def onset_times(curves: xr.DataArray, *, threshold: float) -> xr.DataArray:
    """Apply onset_step along `step` for every other index of a DataArray."""
    steps = curves[names.STEP].values
    return xr.apply_ufunc(
        lambda v: onset_step(steps, v, threshold=threshold), curves,
        input_core_dims=[[names.STEP]], vectorize=True, output_dtypes=[float],
    )


def power_law_fit(n: np.ndarray, tau: np.ndarray) -> tuple[float, float]:
    """Least-squares fit of log tau = log A + b log n over finite entries; returns (A, b)."""
    n, tau = np.asarray(n, float).ravel(), np.asarray(tau, float).ravel()
    ok = np.isfinite(tau) & (tau > 0) & (n > 0)
    if np.unique(n[ok]).size < 2:
        return float("nan"), float("nan")
    b, log_a = np.polyfit(np.log(n[ok]), np.log(tau[ok]), 1)
    return float(np.exp(log_a)), float(b)


def bootstrap_exponent(tau: xr.DataArray, *, num_bootstrap: int, ci_level: float,
                       rng: np.random.Generator) -> tuple[float, float, np.ndarray]:
    """(lower, upper) percentile CI of b, resampling seeds with replacement; also the draws."""
    n = tau[names.N].values
    values = tau.transpose(names.N, names.SEED).values  # [N, S]
    num_seeds = values.shape[1]
    draws = np.empty(num_bootstrap)
    for k in range(num_bootstrap):
        cols = rng.integers(0, num_seeds, size=num_seeds)
        sub = values[:, cols]
        draws[k] = power_law_fit(np.repeat(n[:, None], num_seeds, axis=1), sub)[1]
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return float("nan"), float("nan"), draws
    alpha = (1 - ci_level) / 2
    return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha)), draws


def quality_onset(steps: np.ndarray, values: np.ndarray, *, tolerance: float, threshold: float | None = None,
                  lower_is_better: bool = True) -> float:
    """tau_gen of one run: the first step at which a quality metric comes within `tolerance` of its best.

    "Within tolerance" is relative to the improvement over the run: the metric has closed all but a
    fraction `tolerance` of the gap between its first value and its best value (so the definition
    has no units). With `threshold`, the first step at which the metric crosses that absolute value.
    Interpolated in log-step like tau_mem; NaN when never reached or when the metric never improves.
    """
    g = -np.asarray(values, float) if lower_is_better else np.asarray(values, float)  # higher is better
    finite = np.isfinite(g)
    if not finite.any():
        return float("nan")
    if threshold is not None:
        target = -threshold if lower_is_better else threshold
    else:
        first, best = g[finite][0], np.nanmax(g)
        if best <= first:
            return float("nan")
        target = best - tolerance * (best - first)
    return onset_step(steps, g, threshold=target)


def scaling_fit(tau: xr.DataArray, *, prefix: str, num_bootstrap: int, ci_level: float,
                rng: np.random.Generator) -> dict[str, xr.DataArray]:
    """tau (n, seed), its censoring flag, and the power-law fit tau = A n^b with a bootstrap CI of b."""
    n_grid = xr.broadcast(tau[names.N], tau)[0]
    prefactor, exponent = power_law_fit(n_grid.values, tau.values)
    lo, hi, _ = bootstrap_exponent(tau, num_bootstrap=num_bootstrap, ci_level=ci_level, rng=rng)
    return {
        prefix: tau,
        f"{prefix}_censored": tau.isnull(),
        f"{prefix}_exponent": xr.DataArray(exponent),
        f"{prefix}_prefactor": xr.DataArray(prefactor),
        f"{prefix}_exponent_ci": xr.DataArray(np.array([lo, hi]), dims=(names.CI_BOUND,)),
    }


def pick_quality_metric(cube: xr.Dataset, choice: str | None) -> str | None:
    """The cube variable tau_gen is read from: the configured one, or the first available by preference."""
    if choice and choice != "auto":
        if choice not in cube:
            raise ConfigError(f"config error at 'fit.tau_gen_metric': {choice!r} is not in the cube "
                              f"(available: {sorted(v for v in cube.data_vars if cube[v].dims[:3] == (names.N, names.SEED, names.STEP))})")
        return choice
    for name in names.QUALITY_PREFERENCE:
        if name in cube:
            return name
    return None


def final_memorization(cube: xr.Dataset, *, threshold: float) -> dict[str, xr.DataArray]:
    """f_mem at each run's last checkpoint (mean and s.e. over seeds, per n) and n_star, the largest n
    whose mean final f_mem still reaches `threshold` (NaN when no n does): the memorization threshold of
    the model at the end of training."""
    def last_valid(v: np.ndarray) -> float:
        ok = np.nonzero(np.isfinite(v))[0]
        return float(v[ok[-1]]) if ok.size else np.nan

    last = xr.apply_ufunc(last_valid, cube[names.F_MEM], input_core_dims=[[names.STEP]], vectorize=True,
                          output_dtypes=[float])  # (n, seed): runs may stop at different steps
    mean = last.mean(names.SEED)
    count = last.notnull().sum(names.SEED)
    se = (last.std(names.SEED, ddof=1) / np.sqrt(count)).where(count > 1)
    memorizing = mean[names.N].where(mean >= threshold)
    n_star = memorizing.max() if bool(memorizing.notnull().any()) else xr.DataArray(np.nan)
    return {names.F_MEM_FINAL: mean, names.F_MEM_FINAL_SE: se, names.N_STAR: n_star.astype(float)}


def half_crossing(n: np.ndarray, p: np.ndarray) -> float:
    """The n where P(Delta > 0) first rises through 1/2 (interpolated in log n); NaN if it never does.
    Starting at or above 1/2 gives the smallest n."""
    n, p = np.asarray(n, float), np.asarray(p, float)
    ok = np.isfinite(p)
    n, p = n[ok], p[ok]
    if p.size == 0:
        return np.nan
    if p[0] >= 0.5:
        return float(n[0])
    for i in range(1, p.size):
        if p[i] >= 0.5 > p[i - 1]:
            frac = (0.5 - p[i - 1]) / (p[i] - p[i - 1])
            return float(np.exp(np.log(n[i - 1]) + frac * (np.log(n[i]) - np.log(n[i - 1]))))
    return np.nan


def onset_fits(cube: xr.Dataset, cfg: FitConfig, *, boot: dict) -> tuple[dict[str, xr.DataArray], dict]:
    """tau_mem (and tau_gen when the cube has a quality metric) per (n, seed), their power-law fits, and attrs."""
    tau_mem = onset_times(cube[names.F_MEM], threshold=cfg.tau_mem_threshold)
    variables = scaling_fit(tau_mem, prefix=names.TAU_MEM, **boot)
    attrs = {"num_censored": int(tau_mem.isnull().sum()), "note": "censored runs (tau NaN) are excluded from the fits"}
    metric = pick_quality_metric(cube, cfg.tau_gen_metric)
    if metric is not None:
        lower = metric not in names.HIGHER_IS_BETTER
        steps = cube[names.STEP].values
        tau_gen = xr.apply_ufunc(
            lambda v: quality_onset(steps, v, tolerance=cfg.tau_gen_tolerance, threshold=cfg.tau_gen_threshold,
                                    lower_is_better=lower),
            cube[metric], input_core_dims=[[names.STEP]], vectorize=True, output_dtypes=[float])
        variables.update(scaling_fit(tau_gen, prefix=names.TAU_GEN, **boot))
        attrs.update({"tau_gen_metric": metric, "tau_gen_tolerance": cfg.tau_gen_tolerance,
                      "tau_gen_threshold": "none" if cfg.tau_gen_threshold is None else cfg.tau_gen_threshold,
                      "num_censored_gen": int(tau_gen.isnull().sum())})
    return variables, attrs


def fit_onsets(cube: xr.Dataset, cfg: FitConfig, *, rng: np.random.Generator) -> xr.Dataset:
    """Final-step memorization (f_mem_final, n_star), P(Delta > 0)'s crossing, and, when the cube has a
    time axis, tau_mem and tau_gen with their power-law fits."""
    variables = final_memorization(cube, threshold=cfg.tau_mem_threshold)
    if names.P_DELTA_POS in cube:
        n = cube[names.N].values
        variables[names.N_HALF] = xr.apply_ufunc(lambda p: half_crossing(n, p), cube[names.P_DELTA_POS],
                                                 input_core_dims=[[names.N]], vectorize=True, output_dtypes=[float])
    attrs = {"tau_mem_threshold": cfg.tau_mem_threshold, "ci_level": cfg.ci_level, "num_bootstrap": cfg.num_bootstrap}
    coords = {}
    if cube.sizes[names.STEP] < 2:
        # a closed-form model has one "checkpoint": there is no time axis to read onsets from
        attrs["note"] = "single step (closed-form model): no tau_mem / tau_gen"
    else:
        boot = {"num_bootstrap": cfg.num_bootstrap, "ci_level": cfg.ci_level, "rng": rng}
        onsets, onset_attrs = onset_fits(cube, cfg, boot=boot)
        variables.update(onsets)
        attrs.update(onset_attrs)
        coords[names.CI_BOUND] = ["lower", "upper"]
    out = xr.Dataset(variables, coords=coords, attrs=attrs)
    for key in ("diffmem_version", "git_commit", "config_hash", "experiment"):
        if key in cube.attrs:
            out.attrs[key] = cube.attrs[key]
    out.attrs.update(cf_global_attrs(
        title=f"diffmem fit of experiment {cube.attrs.get('experiment', '?')}",
        summary="Memorization and generalization onsets (tau_mem, tau_gen) per training-set size and seed, "
                "their power-law fits in n with bootstrap confidence intervals, final f_mem and n*",
        command=f"diffmem fit (tau_mem_threshold {cfg.tau_mem_threshold})", previous=cube.attrs))
    return names.annotate(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="diffmem fit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cube", required=True)
    parser.add_argument("--fit-cfg", required=True, help="fit config slice (JSON or path)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        cfg = FitConfig.from_dict(read_json_arg(args.fit_cfg))
    except ConfigError as exc:
        fail(str(exc))
    with xr.open_dataset(args.cube, engine=NETCDF_ENGINE) as cube:
        try:
            fit = fit_onsets(cube.load(), cfg, rng=np.random.default_rng(0))
        except ConfigError as exc:
            fail(str(exc))
    atomic_to_netcdf(fit, args.out)
    finals = ", ".join(f"n={int(n)}: {float(v):.3f}" for n, v in zip(fit[names.N].values, fit[names.F_MEM_FINAL].values))
    print(f"[fit] final f_mem {finals}; n* = {float(fit[names.N_STAR]):g}")
    if names.N_HALF in fit:
        print(f"[fit] P(Delta > 0) crosses 1/2 at n = {float(fit[names.N_HALF].isel({names.STEP: -1})):.3g} (last step)")
    if names.TAU_MEM not in fit:
        print(f"[fit] {fit.attrs['note']} -> {args.out}")
        return
    lo, hi = fit[names.TAU_MEM_EXPONENT_CI].values
    print(f"[fit] tau_mem ~ n^b with b = {float(fit[names.TAU_MEM_EXPONENT]):.3f} "
          f"[{lo:.3f}, {hi:.3f}] ({int(cfg.ci_level * 100)} % CI), "
          f"{fit.attrs['num_censored']} censored runs -> {args.out}")
    if names.TAU_GEN in fit:
        lo, hi = fit[names.TAU_GEN_EXPONENT_CI].values
        print(f"[fit] tau_gen ({fit.attrs['tau_gen_metric']}) ~ n^b with b = {float(fit[names.TAU_GEN_EXPONENT]):.3f} "
              f"[{lo:.3f}, {hi:.3f}], {fit.attrs['num_censored_gen']} censored runs")


if __name__ == "__main__":
    main(sys.argv[1:])
