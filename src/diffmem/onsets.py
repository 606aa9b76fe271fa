"""Onset times and their scaling with n: tau_mem(n, seed), tau_gen(n, seed) and fits tau = A n^b.

tau_mem is the first checkpoint step at which f_mem reaches a threshold, linearly interpolated in
log(step) between that checkpoint and the one before (Bonnaire et al. 2025, arXiv 2505.17638,
Sec. 3, use the onset of f_mem; a threshold makes it robust to noise). A run that never reaches it
is censored: tau_mem is NaN and the censored flag is set; censored runs are left out of the fit
(their tau_mem is only known to exceed the last step, so the fitted exponent is then a lower
bound, said in the file's attrs).

tau_gen (when the cube has a quality metric, e.g. `fd_classifier`) is the first step at which the
metric has closed all but a fraction `tau_gen_tolerance` of the gap between its first and its best
value over the run (or crosses `tau_gen_threshold`), interpolated in log-step the same way. A run's own
best depends on n (a run that memorizes stops improving against held-out data), so that readout mixes
"when samples become good" with "how good they get". `tau_gen_levels (quality_level, n, seed)` reads
every run against the same targets instead: target(q) = best + q (first - best), with `first` the median
over runs of the metric at the first checkpoint (the untrained model) and `best` the best value any run
of the experiment reaches; with `fit.tau_gen_level` the headline tau_gen is read that way too. A run that
never reaches a target is censored there.

Whether a power law describes tau(n) at all is part of the fit (scaling.py): every fitted tau gets
local slopes between consecutive n with CIs, a lack-of-fit F test of the per-n means against the
seed scatter (p-value), and a flag `<tau>_power_law_ok` (criterion in the attrs). The exponent's
CI (`_exponent_ci`) resamples the n points as well as the seeds, so it widens when the points
scatter about the law beyond seed noise; `_exponent_ci_seeds` resamples the seeds only.
tau_mem is also read at several levels (`fit.tau_mem_levels`) of raw f_mem and of f_mem divided by
its final value (the paper's normalization), `tau_mem_levels (normalization, level, n, seed)`, and
tau_gen at several tolerances (`tau_gen_tolerances (tolerance, n, seed)`), each with the same
diagnostics; a law that holds does not depend on the level.

Used by the fit stage (`diffmem.stages.fit`), the sweep, and the random-features and linear stages.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from diffmem import names
from diffmem.config import ConfigError, FitConfig
from diffmem.io import carried_provenance, cf_global_attrs
from diffmem.scaling import POWER_LAW_CRITERION, diagnose


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


def common_quality_targets(values: np.ndarray, levels, *, lower_is_better: bool = True) -> np.ndarray:
    """The experiment-wide targets of a quality metric at each level q: best + q (first - best).

    values [..., step] over every run of an experiment; `first` is the median over runs of the first finite
    checkpoint value, `best` the best value of any run. The same target holds for every run, so the time to
    reach it does not depend on how good each run gets later. NaN when the metric never improves."""
    v = np.asarray(values, float)
    g = -v if lower_is_better else v  # higher is better
    runs = g.reshape(-1, g.shape[-1])
    firsts = [r[np.isfinite(r)][0] for r in runs if np.isfinite(r).any()]
    if not firsts:
        return np.full(len(levels), np.nan)
    first, best = float(np.median(firsts)), float(np.nanmax(runs))
    if best <= first:
        return np.full(len(levels), np.nan)
    targets = np.array([best - float(q) * (best - first) for q in levels])
    return -targets if lower_is_better else targets


def quality_level_onsets(curves: xr.DataArray, levels, *, lower_is_better: bool = True) -> xr.DataArray:
    """tau_gen (quality_level, n, seed): the first step at which each run reaches the common target of each
    level (common_quality_targets), log-step interpolated; NaN (censored) where a run never reaches it. A run
    already at the target at step 0 (its untrained value better than the median's, at a level near 1) reads
    step 1, the log position onset_step gives step 0, so that the power law in n stays defined."""
    steps = curves[names.STEP].values
    targets = common_quality_targets(curves.transpose(..., names.STEP).values, levels, lower_is_better=lower_is_better)

    def onset(v: np.ndarray, target: float) -> float:
        if not np.isfinite(target):
            return float("nan")
        tau = quality_onset(steps, v, tolerance=0.5, threshold=target, lower_is_better=lower_is_better)
        return max(tau, 1.0) if np.isfinite(tau) else tau

    by_level = [xr.apply_ufunc(onset, curves, float(t), input_core_dims=[[names.STEP], []], vectorize=True,
                               output_dtypes=[float]) for t in targets]
    out = xr.concat(by_level, dim=pd_index(levels, names.QUALITY_LEVEL))
    return out.assign_coords({names.QUALITY_TARGET: ((names.QUALITY_LEVEL,), targets)})


def scaling_fit(tau: xr.DataArray, *, prefix: str, num_bootstrap: int, ci_level: float,
                rng: np.random.Generator, alpha: float = 0.05) -> dict[str, xr.DataArray]:
    """tau (..., n, seed), its censoring flag, the power-law fit tau = A n^b and its diagnostics
    (scaling.diagnose: CIs, local slopes, lack-of-fit test, flag) for every index of the leading dims."""
    lead = [d for d in tau.dims if d not in (names.N, names.SEED)]
    tau = tau.transpose(*lead, names.N, names.SEED)
    n = tau[names.N].values
    lead_shape = tuple(tau.sizes[d] for d in lead)
    values = tau.values
    results = [diagnose(n, values[idx], num_bootstrap=num_bootstrap, ci_level=ci_level, alpha=alpha, rng=rng)
               for idx in np.ndindex(lead_shape)]
    lead_coords = {d: tau[d].values for d in lead}
    segment = {names.SEGMENT: np.arange(max(n.size - 1, 0)), names.N_LO: (names.SEGMENT, n[:-1]),
               names.N_HI: (names.SEGMENT, n[1:])}

    def stacked(key: str, dims: tuple[str, ...] = (), dtype=float) -> xr.DataArray:
        arr = np.array([r[key] for r in results], dtype=dtype).reshape(lead_shape + np.shape(results[0][key]))
        coords = dict(lead_coords, **(segment if names.SEGMENT in dims else {}))
        return xr.DataArray(arr, dims=(*lead, *dims), coords=coords)

    return {
        prefix: tau,
        f"{prefix}_censored": tau.isnull(),
        f"{prefix}_exponent": stacked("exponent"),
        f"{prefix}_prefactor": stacked("prefactor"),
        f"{prefix}_exponent_ci": stacked("exponent_ci", (names.CI_BOUND,)),
        f"{prefix}_{names.EXPONENT_CI_SEEDS}": stacked("exponent_ci_seeds", (names.CI_BOUND,)),
        f"{prefix}_{names.LOCAL_SLOPE}": stacked("local_slope", (names.SEGMENT,)),
        f"{prefix}_{names.LOCAL_SLOPE_CI}": stacked("local_slope_ci", (names.SEGMENT, names.CI_BOUND)),
        f"{prefix}_{names.LOF_PVALUE}": stacked("lof_p_value"),
        f"{prefix}_{names.LOF_RMS}": stacked("lof_rms"),
        f"{prefix}_{names.POWER_LAW_OK}": stacked("power_law_ok", dtype=bool),
    }


def last_valid(v: np.ndarray) -> float:
    """The last finite entry of a 1-d array (NaN when there is none)."""
    ok = np.nonzero(np.isfinite(v))[0]
    return float(v[ok[-1]]) if ok.size else np.nan


def final_values(curves: xr.DataArray) -> xr.DataArray:
    """Each run's last finite value along `step` (runs may stop at different steps)."""
    return xr.apply_ufunc(last_valid, curves, input_core_dims=[[names.STEP]], vectorize=True,
                          output_dtypes=[float])


def level_onsets(f_mem: xr.DataArray, levels: list[float] | tuple[float, ...]) -> xr.DataArray:
    """tau_mem (normalization, level, n, seed): the onset of f_mem (raw) and of f_mem divided by the run's
    final f_mem (final; NaN for a run that ends at f_mem = 0) at each level."""
    final = final_values(f_mem)
    normalized = f_mem / final.where(final > 0)
    by_norm = []
    for curves in (f_mem, normalized):
        by_norm.append(xr.concat([onset_times(curves, threshold=lv) for lv in levels],
                                 dim=pd_index(levels, names.LEVEL)))
    return xr.concat(by_norm, dim=pd_index(list(names.NORMALIZATIONS), names.NORMALIZATION))


def pd_index(values, name: str):
    import pandas as pd

    return pd.Index(list(values), name=name)


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
    last = final_values(cube[names.F_MEM])  # (n, seed): runs may stop at different steps
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
    variables.update(scaling_fit(level_onsets(cube[names.F_MEM], cfg.tau_mem_levels), prefix=names.TAU_MEM_LEVELS, **boot))
    attrs = {"num_censored": int(tau_mem.isnull().sum()), "note": "censored runs (tau NaN) are excluded from the fits",
             "power_law_criterion": POWER_LAW_CRITERION, "lack_of_fit_alpha": cfg.lack_of_fit_alpha}
    metric = pick_quality_metric(cube, cfg.tau_gen_metric)
    if metric is not None:
        lower = metric not in names.HIGHER_IS_BETTER
        steps = cube[names.STEP].values
        if cfg.tau_gen_threshold is None and cfg.tau_gen_level is not None:
            tau_gen = quality_level_onsets(cube[metric], [cfg.tau_gen_level], lower_is_better=lower)
            attrs["tau_gen_target"] = float(tau_gen[names.QUALITY_TARGET].values[0])
            tau_gen = tau_gen.isel({names.QUALITY_LEVEL: 0}, drop=True).drop_vars(names.QUALITY_TARGET, errors="ignore")
        else:
            tau_gen = xr.apply_ufunc(
                lambda v: quality_onset(steps, v, tolerance=cfg.tau_gen_tolerance, threshold=cfg.tau_gen_threshold,
                                        lower_is_better=lower),
                cube[metric], input_core_dims=[[names.STEP]], vectorize=True, output_dtypes=[float])
        variables.update(scaling_fit(tau_gen, prefix=names.TAU_GEN, **boot))
        by_tolerance = [xr.apply_ufunc(lambda v, tol=tol: quality_onset(steps, v, tolerance=tol, lower_is_better=lower),
                                       cube[metric], input_core_dims=[[names.STEP]], vectorize=True,
                                       output_dtypes=[float]) for tol in cfg.tau_gen_tolerances]
        variables.update(scaling_fit(xr.concat(by_tolerance, dim=pd_index(cfg.tau_gen_tolerances, names.TOLERANCE)),
                                     prefix=names.TAU_GEN_TOLERANCES, **boot))
        by_level = quality_level_onsets(cube[metric], cfg.tau_gen_levels, lower_is_better=lower)
        variables.update(scaling_fit(by_level, prefix=names.TAU_GEN_LEVELS, **boot))
        attrs.update({"tau_gen_metric": metric, "tau_gen_tolerance": cfg.tau_gen_tolerance,
                      "tau_gen_level": "none" if cfg.tau_gen_level is None else cfg.tau_gen_level,
                      "tau_gen_readout": ("threshold" if cfg.tau_gen_threshold is not None else
                                          "common level" if cfg.tau_gen_level is not None else "tolerance"),
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
        boot = {"num_bootstrap": cfg.num_bootstrap, "ci_level": cfg.ci_level, "rng": rng, "alpha": cfg.lack_of_fit_alpha}
        onsets, onset_attrs = onset_fits(cube, cfg, boot=boot)
        variables.update(onsets)
        attrs.update(onset_attrs)
        coords[names.CI_BOUND] = ["lower", "upper"]
    out = xr.Dataset(variables, coords=coords, attrs=attrs)
    out.attrs.update(carried_provenance(cube.attrs))
    out.attrs.update(cf_global_attrs(
        title=f"diffmem fit of experiment {cube.attrs.get('experiment', '?')}",
        summary="Memorization and generalization onsets (tau_mem, tau_gen) per training-set size and seed, "
                "their power-law fits in n with bootstrap confidence intervals, final f_mem and n*",
        command=f"diffmem fit (tau_mem_threshold {cfg.tau_mem_threshold})", previous=cube.attrs))
    return names.annotate(out)


def verdict(ok: bool, p_value: float, num_censored: int = 0) -> str:
    """'holds', 'REJECTED', 'not confirmed' (censored runs) or 'untested' (the lack-of-fit test had no
    degrees of freedom)."""
    if ok:
        return "holds"
    if num_censored:
        return f"not confirmed ({num_censored} censored runs)"
    return "REJECTED" if np.isfinite(p_value) else "untested (needs >= 3 n and repeated seeds)"


def describe_scaling(fit: xr.Dataset, prefix: str, *, label: str) -> list[str]:
    """Lines for the log: the exponent with both CIs, the local slopes, the lack-of-fit test and the flag."""
    b = float(fit[f"{prefix}_exponent"])
    lo, hi = fit[f"{prefix}_exponent_ci"].values
    slo, shi = fit[f"{prefix}_{names.EXPONENT_CI_SEEDS}"].values
    ok = bool(fit[f"{prefix}_{names.POWER_LAW_OK}"])
    lines = [f"{label} ~ n^b with b = {b:.3f}, CI [{lo:.3f}, {hi:.3f}] over n points and seeds "
             f"([{slo:.3f}, {shi:.3f}] over seeds only); lack-of-fit p = {float(fit[f'{prefix}_{names.LOF_PVALUE}']):.3g}, "
             f"rms log residual {float(fit[f'{prefix}_{names.LOF_RMS}']):.3f}; power law "
             + verdict(ok, float(fit[f"{prefix}_{names.LOF_PVALUE}"]), int(fit[f"{prefix}_censored"].sum()))]
    slopes = fit[f"{prefix}_{names.LOCAL_SLOPE}"]
    ci = fit[f"{prefix}_{names.LOCAL_SLOPE_CI}"].values
    parts = [f"{int(a)}->{int(c)}: {float(s):.2f} [{l:.2f}, {h:.2f}]"
             for a, c, s, (l, h) in zip(slopes[names.N_LO].values, slopes[names.N_HI].values, slopes.values, ci)]
    lines.append(f"{label} local slopes " + "; ".join(parts))
    return lines


def describe_levels(fit: xr.Dataset, prefix: str, dim: str) -> list[str]:
    """One line per level (and normalization): exponent, CI, lack-of-fit p, flag."""
    exp = fit[f"{prefix}_exponent"]
    lines = []
    for idx in np.ndindex(exp.shape):
        sel = {d: exp[d].values[i] for d, i in zip(exp.dims, idx)}
        lo, hi = fit[f"{prefix}_exponent_ci"].sel(sel).values
        where = ", ".join(f"{d} {v:g}" if d != names.NORMALIZATION else f"{v:>5}" for d, v in sel.items())
        censored = int(fit[f"{prefix}_censored"].sel(sel).sum())
        lines.append(f"  {where}: b = {float(exp.sel(sel)):.3f} [{lo:.3f}, {hi:.3f}], "
                     f"lack-of-fit p = {float(fit[f'{prefix}_{names.LOF_PVALUE}'].sel(sel)):.3g}, "
                     f"{censored} censored, power law "
                     f"{verdict(bool(fit[f'{prefix}_{names.POWER_LAW_OK}'].sel(sel)), float(fit[f'{prefix}_{names.LOF_PVALUE}'].sel(sel)), censored)}")
    return lines

