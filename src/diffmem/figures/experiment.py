"""Figures of a finished experiment, from cube.nc and fit.nc.

- `f_mem_vs_step.png`: f_mem against step per n (mean +- standard error over seeds, log x).
- `f_mem_vs_step_over_n.png`: the same against step / n: curves collapse when tau_mem is linear in n.
- `tau_mem_vs_n.png`: tau_mem(n, seed) in log-log with the fitted power law and its exponent CI.
- `losses.png`: training and held-out probe loss against step per n.
- `scaling.png`: does a power law hold? tau_mem against n with the fit and the local slopes between
  consecutive n; the local slopes with their CIs against n (tau_gen's too); the exponent against
  the level at which tau_mem is read, on raw and on normalized f_mem (open markers: the lack-of-fit
  test rejects the power law there).
- `overview.png`: the four panels together (the README's headline figure).
With `--closed-form` (families empirical and linear, a single step): `f_mem_vs_n.png`, and with
`--quality` also `quality_vs_n.png` (the quality metric against n, P(Delta > 0) against n/d).
With `--quality` (experiments with `quality.enabled`):
- `timescales.png`: tau_gen and tau_mem against n (log-log) with both fits and the generalization
  window between them shaded.
- `quality_vs_step.png`: the tau_gen metric against step per n.
- `loss_gap.png`: test minus train probe loss against step per n.
- `p_delta_pos.png`: P(E_TG - E_OG > 0) over seeds against n (or n/d) at three checkpoints.
- `tau_gen_levels.png`: the quality metric with the experiment-wide targets of each quality level, and
  tau_gen's exponent with its CI at each level against 0 (independent of n) and 1 (proportional to n).

Drawn by the plot stage, any of them in one call (`make_experiment_figures` hands each name to its
family's function): `diffmem plot --cube cube.nc --fit fit.nc --outdir figures/ --figures overview timescales`
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr

from diffmem import names
from diffmem.figures.common import ci_label, f_mem_label, plain_log_ticks, save_figure, seed_count
from diffmem.onsets import pick_quality_metric, verdict


def _frame(cube: xr.Dataset, variables: list[str]) -> pd.DataFrame:
    df = cube[variables].to_dataframe().reset_index()
    df = df[df[names.STEP] > 0].dropna(subset=variables, how="all")
    df["step / n"] = df[names.STEP] / df[names.N]
    return df


def _palette(cube: xr.Dataset):
    return sns.color_palette("viridis", n_colors=cube.sizes[names.N])


def lineplot_se(ax, df: pd.DataFrame, *, x: str, y: str, hue: str, style: str | None = None, **kws) -> None:
    """`sns.lineplot(data=df, x=x, y=y, hue=hue, style=style, errorbar="se", **kws)`, the same lines, bands and
    legend, with the mean and standard error over seeds taken by one pandas groupby. seaborn aggregates each x
    of each curve apart (a pandas Series per x), ~60 % of the figures' lineplot time.

    As seaborn: rows missing a variable dropped; per (hue, style, x) the mean and mean +- sem (ddof 1, none from
    one value); a band of alpha 0.2 in the line's colour per curve, in seaborn's curve order (hue, then style)."""
    keys = [hue] + ([style] if style else [])
    data = df.dropna(subset=[x, y, *keys])
    grouped = data.groupby([*keys, x], sort=False)[y]
    agg = pd.DataFrame({y: grouped.mean(), "se": grouped.sem()}).reset_index()
    style_order = list(pd.unique(data[style])) if style else None  # seaborn's: first appearance
    drawn = len(ax.lines)
    sns.lineplot(data=agg, x=x, y=y, hue=hue, style=style, style_order=style_order, estimator=None, errorbar=None,
                 ax=ax, **kws)
    curves = [agg[(agg[hue] == h) & ((agg[style] == st) if style else True)]
              for h in np.sort(agg[hue].unique()) for st in (style_order or [None])]
    curves = [c.sort_values(x) for c in curves if len(c)]  # seaborn skips an empty (hue, style) pair too
    for line, one in zip(ax.lines[drawn:], curves):  # seaborn draws the curves first, then legend entries
        ax.fill_between(one[x], one[y] - one["se"], one[y] + one["se"], color=line.get_color(), alpha=0.2)


def plot_f_mem(ax, cube: xr.Dataset, *, x: str = names.STEP) -> None:
    df = _frame(cube, [names.F_MEM])
    lineplot_se(ax, df, x=x, y=names.F_MEM, hue=names.N, palette=_palette(cube), marker="o", markersize=3,
                legend="full")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(f_mem_label(cube[names.F_MEM]))
    ax.set_xlabel("training step" if x == names.STEP else "training step / n")


def plot_tau(ax, fit: xr.Dataset) -> None:
    tau = fit[names.TAU_MEM].to_dataframe().reset_index().dropna(subset=[names.TAU_MEM])
    if tau.empty:
        ax.text(0.5, 0.5, "tau_mem not reached for any n", ha="center", transform=ax.transAxes)
        return
    tau["seed"] = tau[names.SEED].map(lambda s: f"seed {s}")
    sns.scatterplot(data=tau, x=names.N, y=names.TAU_MEM, hue="seed", palette="deep", ax=ax, s=30)
    mean = tau.groupby(names.N)[names.TAU_MEM].apply(lambda v: np.exp(np.log(v).mean()))
    ax.plot(mean.index, mean.values, "k_", markersize=14, label="geometric mean")
    b, a = float(fit[names.TAU_MEM_EXPONENT]), float(fit[names.TAU_MEM_PREFACTOR])
    lo, hi = fit[names.TAU_MEM_EXPONENT_CI].values
    if np.isfinite(b):
        grid = np.geomspace(tau[names.N].min() / 1.3, tau[names.N].max() * 1.3, 50)
        label = f"fit: b = {b:.2f} {ci_label(lo, hi, seeds=seed_count(fit))}"
        if names.TAU_MEM_LOF_PVALUE in fit:
            p_value = float(fit[names.TAU_MEM_LOF_PVALUE])
            label += (f"\nlack-of-fit p = {p_value:.2g}: power law "
                      f"{verdict(bool(fit[names.TAU_MEM_POWER_LAW_OK]), p_value, int(fit[names.TAU_MEM_CENSORED].sum()))}")
        ax.plot(grid, a * grid**b, "k--", label=label)
    if names.TAU_MEM_LOCAL_SLOPE in fit:
        _annotate_local_slopes(ax, mean, fit[names.TAU_MEM_LOCAL_SLOPE])
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.xaxis, tau[names.N].unique())
    ax.set_xlabel("n")
    ax.set_ylabel(f"tau_mem (f_mem >= {fit.attrs.get('tau_mem_threshold')})")
    ax.legend(fontsize=7)


def _annotate_local_slopes(ax, mean: pd.Series, slopes: xr.DataArray) -> None:
    """Write each local slope next to the segment joining consecutive per-n geometric means."""
    for lo, hi, slope in zip(slopes[names.N_LO].values, slopes[names.N_HI].values, slopes.values):
        if lo in mean.index and hi in mean.index and np.isfinite(slope):
            ax.plot([lo, hi], [mean[lo], mean[hi]], color="0.4", lw=0.8)
            ax.annotate(f"{slope:.2f}", (np.sqrt(lo * hi), np.sqrt(mean[lo] * mean[hi])), fontsize=7,
                        xytext=(0, 6), textcoords="offset points", ha="right", color="0.25")


def plot_local_slopes(ax, fit: xr.Dataset) -> None:
    """Local slopes with CIs at the geometric midpoints of consecutive n, and the global exponents."""
    for prefix, color, label in ((names.TAU_MEM, "tab:red", "tau_mem"), (names.TAU_GEN, "tab:blue", "tau_gen")):
        var = f"{prefix}_{names.LOCAL_SLOPE}"
        if var not in fit:
            continue
        slopes = fit[var]
        mid = np.sqrt(slopes[names.N_LO].values * slopes[names.N_HI].values)
        ci = fit[f"{prefix}_{names.LOCAL_SLOPE_CI}"].values
        y = slopes.values
        err = np.abs(np.stack([y - ci[:, 0], ci[:, 1] - y]))
        ax.errorbar(mid, y, yerr=np.nan_to_num(err), marker="o", color=color, capsize=3, ls="none",
                    label=f"{label} local slope (95 % Welch CI)")
        b = float(fit[f"{prefix}_exponent"])
        lo, hi = fit[f"{prefix}_exponent_ci"].values
        ax.axhline(b, color=color, lw=0.8, ls="--", label=f"{label} global b = {b:.2f}")
        ax.axhspan(lo, hi, color=color, alpha=0.1)
    ax.set_xscale("log")
    n = fit[names.N].values
    plain_log_ticks(ax.xaxis, n)
    ax.set_xlim(n.min() / 1.2, n.max() * 1.2)
    ax.set_xlabel("n (segments between consecutive n)")
    ax.set_ylabel("d log tau / d log n")
    ax.legend(fontsize=6)


def plot_level_exponents(ax, fit: xr.Dataset) -> None:
    """Exponent with its CI against the level (tau_mem, raw and normalized) and the tolerance (tau_gen)."""
    series = []
    if f"{names.TAU_MEM_LEVELS}_exponent" in fit:
        exp = fit[f"{names.TAU_MEM_LEVELS}_exponent"]
        for norm, marker in zip(exp[names.NORMALIZATION].values, ("o", "s")):
            label = "tau_mem, raw f_mem" if norm == "raw" else "tau_mem, f_mem / final f_mem"
            series.append((f"{names.TAU_MEM_LEVELS}", {names.NORMALIZATION: norm}, names.LEVEL, marker, label))
    if f"{names.TAU_GEN_TOLERANCES}_exponent" in fit:
        series.append((names.TAU_GEN_TOLERANCES, {}, names.TOLERANCE, "^", "tau_gen (x = tolerance)"))
    for k, (prefix, sel, dim, marker, label) in enumerate(series):
        exp = fit[f"{prefix}_exponent"].sel(sel)
        ci = fit[f"{prefix}_exponent_ci"].sel(sel).transpose(dim, names.CI_BOUND).values
        ok = fit[f"{prefix}_{names.POWER_LAW_OK}"].sel(sel).values.astype(bool)
        x = exp[dim].values * (1 + 0.04 * (k - 1))  # small offsets so the error bars do not overlap
        y = exp.values
        color = f"C{k}"
        err = np.abs(np.stack([y - ci[:, 0], ci[:, 1] - y]))
        ax.errorbar(x, y, yerr=np.nan_to_num(err), color=color, ls="-", lw=0.8, capsize=2, marker="none", label=label)
        ax.scatter(x[ok], y[ok], marker=marker, color=color, zorder=3)
        ax.scatter(x[~ok], y[~ok], marker=marker, facecolors="white", edgecolors=color, zorder=3)
    ax.scatter([], [], marker="o", facecolors="white", edgecolors="k", label="open: power law rejected")
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    ax.axhline(0.0, color="k", lw=0.6, ls=":")
    ax.set_xscale("log")
    levels = [float(v) for prefix, _, dim, _, _ in series for v in fit[f"{prefix}_exponent"][dim].values]
    plain_log_ticks(ax.xaxis, sorted(set(levels)) or None)
    ax.set_xlabel("level of f_mem at which tau_mem is read")
    ax.set_ylabel("exponent b (95 % CI, n points and seeds)")
    ax.legend(fontsize=6)


def make_scaling_figure(fit: xr.Dataset, out: str | Path, *, title: str = "") -> Path:
    """`scaling.png`: tau_mem vs n with the fit and local slopes; local slopes; exponent vs level."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    plot_tau(axes[0], fit)
    for ax, var, draw in ((axes[1], names.TAU_MEM_LOCAL_SLOPE, plot_local_slopes),
                          (axes[2], f"{names.TAU_MEM_LEVELS}_exponent", plot_level_exponents)):
        if var in fit and bool(np.isfinite(fit[var].values).any()):
            draw(ax, fit)
        else:  # e.g. no run memorized: nothing to place on a log axis
            ax.text(0.5, 0.5, "no finite local slope / exponent", ha="center", transform=ax.transAxes)
            ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    save_figure(fig, out)
    return out


def plot_losses(ax, cube: xr.Dataset) -> None:
    df = _frame(cube, [names.TRAIN_LOSS, names.TEST_LOSS]).melt(
        id_vars=[names.N, names.SEED, names.STEP], value_vars=[names.TRAIN_LOSS, names.TEST_LOSS],
        var_name="probe", value_name="loss")
    lineplot_se(ax, df, x=names.STEP, y="loss", hue=names.N, style="probe", palette=_palette(cube))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    plain_log_ticks(ax.yaxis)
    ax.set_ylabel("denoising loss (fixed probe)")
    ax.legend(fontsize=6, ncol=2)


def single_panel_figure(draw, path: Path, *, title: str) -> Path:
    """One panel drawn by `draw(ax)`, titled and saved to `path`."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    draw(ax)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path)
    return path


def make_figures(cube: xr.Dataset, fit: xr.Dataset, outdir: str | Path, *, title: str = "",
                 only: set[str] | None = None) -> list[Path]:
    """The memorization figures (`only`: just these names, without .png; default all)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid", context="paper")
    written = []
    single = {
        "f_mem_vs_step.png": lambda ax: plot_f_mem(ax, cube),
        "f_mem_vs_step_over_n.png": lambda ax: plot_f_mem(ax, cube, x="step / n"),
        "tau_mem_vs_n.png": lambda ax: plot_tau(ax, fit),
        "losses.png": lambda ax: plot_losses(ax, cube),
    }
    for name, draw in single.items():
        if only is None or name[:-4] in only:
            written.append(single_panel_figure(draw, outdir / name, title=title))
    if only is None or "overview" in only:
        fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
        for ax, draw in zip(axes.ravel(), single.values()):
            draw(ax)
        fig.suptitle(title)
        fig.tight_layout()
        save_figure(fig, outdir / "overview.png")
        written.append(outdir / "overview.png")
    if only is None or "scaling" in only:
        written.append(make_scaling_figure(fit, outdir / "scaling.png", title=title))
    return written


def plot_quality(ax, cube: xr.Dataset, metric: str) -> None:
    df = _frame(cube, [metric])
    lineplot_se(ax, df, x=names.STEP, y=metric, hue=names.N, palette=_palette(cube), marker="o", markersize=3)
    ax.set_xscale("log")
    if metric not in names.HIGHER_IS_BETTER and (df[metric] > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(cube[metric].attrs.get("long_name", metric), fontsize=7)


def plot_loss_gap(ax, cube: xr.Dataset) -> None:
    gap = (cube[names.TEST_LOSS] - cube[names.TRAIN_LOSS]).rename("test - train loss")
    df = gap.to_dataframe().reset_index()
    df = df[df[names.STEP] > 0]
    lineplot_se(ax, df, x=names.STEP, y="test - train loss", hue=names.N, palette=_palette(cube))
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("generalization gap: test - train probe loss")


def plot_timescales(ax, fit: xr.Dataset) -> None:
    """tau_gen and tau_mem against n with both fits and the generalization window shaded between."""
    n_all = fit[names.N].values
    grid = np.geomspace(n_all.min() / 1.3, n_all.max() * 1.3, 60)
    lines = {}
    for var, color, label in ((names.TAU_GEN, "tab:blue", "tau_gen"), (names.TAU_MEM, "tab:red", "tau_mem")):
        if var not in fit:
            continue
        tau = fit[var].to_dataframe().reset_index().dropna(subset=[var])
        ax.scatter(tau[names.N], tau[var], s=14, color=color, alpha=0.6)
        b, a = float(fit[f"{var}_exponent"]), float(fit[f"{var}_prefactor"])
        lo, hi = fit[f"{var}_exponent_ci"].values
        if np.isfinite(b):
            lines[var] = a * grid**b
            ax.plot(grid, lines[var], color=color,
                    label=f"{label} ~ n^{b:.2f} {ci_label(lo, hi, seeds=seed_count(fit))}")
    if len(lines) == 2:
        ax.fill_between(grid, lines[names.TAU_GEN], lines[names.TAU_MEM],
                        where=lines[names.TAU_MEM] > lines[names.TAU_GEN], color="tab:green", alpha=0.15,
                        label="generalization window")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.xaxis, n_all)
    ax.set_xlabel("n")
    ax.set_ylabel("training step")
    ax.legend(fontsize=7)


def tau_gen_level_verdicts(fit: xr.Dataset) -> dict[str, list[float]]:
    """The quality levels grouped by what the exponent's CI rejects: b = 1 only (tau_gen proportional to n
    rejected), b = 0 only (tau_gen independent of n rejected), both, neither; levels with a censored run or
    no CI are 'untested'. Each level is in exactly one group."""
    prefix = names.TAU_GEN_LEVELS
    ci = fit[f"{prefix}_exponent_ci"].transpose(names.QUALITY_LEVEL, names.CI_BOUND).values
    censored = fit[f"{prefix}_censored"].any([names.N, names.SEED]).values
    out: dict[str, list[float]] = {key: [] for key in VERDICT_STYLE}
    for q, (lo, hi), cens in zip(fit[names.QUALITY_LEVEL].values, ci, censored):
        if cens or not (np.isfinite(lo) and np.isfinite(hi)):
            key = "untested"
        else:
            key = {(True, False): "b = 1 rejected", (False, True): "b = 0 rejected", (True, True): "both rejected",
                   (False, False): "neither rejected"}[(bool(hi < 1), bool(lo > 0))]
        out[key].append(float(q))
    return out


VERDICT_STYLE = {"b = 1 rejected": ("tab:blue", "o"), "b = 0 rejected": ("tab:red", "s"),
                 "both rejected": ("tab:purple", "^"), "neither rejected": ("tab:gray", "D"),
                 "untested": ("tab:gray", "x")}


def make_tau_gen_levels_figure(cube: xr.Dataset, fit: xr.Dataset, out: str | Path, *, title: str = "") -> Path:
    """`tau_gen_levels.png`: left, the quality metric per n (median over seeds) with the experiment-wide targets
    of each quality level; right, tau_gen's exponent b with its CI at each level, against b = 0 (tau_gen
    independent of n) and b = 1 (proportional to n), and which of the two the data reject."""
    metric = fit.attrs["tau_gen_metric"]
    prefix = names.TAU_GEN_LEVELS
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    palette = _palette(cube)
    curves = cube[metric].median(names.SEED)
    for i, n in enumerate(cube[names.N].values):
        left.plot(np.maximum(cube[names.STEP].values, 0.7), curves.sel({names.N: n}).values, color=palette[i],
                  marker="o", ms=2, lw=1, label=f"n = {int(n)}")
    headline = fit.attrs.get("tau_gen_level")
    for q, target in zip(fit[names.QUALITY_LEVEL].values, fit[names.QUALITY_TARGET].values):
        bold = isinstance(headline, float) and np.isclose(q, headline)
        left.axhline(target, color="k", lw=1.0 if bold else 0.4, ls="-" if bold else ":", alpha=0.8)
        left.annotate(f"q={q:g}", (1.0, target), xycoords=("axes fraction", "data"), fontsize=6, va="center",
                      xytext=(2, 0), textcoords="offset points")
    left.set_xscale("log")
    if metric not in names.HIGHER_IS_BETTER and bool((curves > 0).all()):
        left.set_yscale("log")
    left.set_xlabel("training step (step 0 drawn at 0.7)")
    left.set_ylabel(f"{metric} (median over seeds)")
    left.legend(fontsize=6)
    left.set_title("targets common to every run: best + q (first - best)", fontsize=8)

    q = fit[names.QUALITY_LEVEL].values
    b = fit[f"{prefix}_exponent"].values
    ci = fit[f"{prefix}_exponent_ci"].transpose(names.QUALITY_LEVEL, names.CI_BOUND).values
    verdicts = tau_gen_level_verdicts(fit)
    for key, (color, marker) in VERDICT_STYLE.items():
        pick = np.isin(q, verdicts[key]) & np.isfinite(b)  # no exponent (e.g. fewer than 2 n reached): no point
        if not pick.any():
            continue
        err = np.abs(np.stack([b[pick] - ci[pick, 0], ci[pick, 1] - b[pick]]))
        right.errorbar(q[pick], b[pick], yerr=np.nan_to_num(err), fmt=marker, color=color, capsize=2, ms=4,
                       label=f"{key} ({pick.sum()} of {q.size})")
    tested = q.size - len(verdicts["untested"])
    rejects_one = len(verdicts["b = 1 rejected"]) + len(verdicts["both rejected"])
    rejects_zero = len(verdicts["b = 0 rejected"]) + len(verdicts["both rejected"])
    right.text(0.02, 0.02, f"of {tested} levels every run reaches: b = 1 rejected at {rejects_one}, "
               f"b = 0 rejected at {rejects_zero}", transform=right.transAxes, fontsize=7, va="bottom")
    right.axhline(0.0, color="k", lw=0.8, ls="--", label="b = 0: independent of n")
    right.axhline(1.0, color="tab:red", lw=0.8, ls="--", label="b = 1: proportional to n")
    right.invert_xaxis()
    right.set_xlabel("quality level q (smaller: closer to the best quality reached)")
    right.set_ylabel(f"tau_gen ~ n^b: b with its {int(round(100 * float(fit.attrs['ci_level'])))} % CI")
    right.legend(fontsize=6)
    right.set_title(f"tau_gen's exponent by level ({seed_count(fit)} seeds; CI resamples n points and seeds)",
                    fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    save_figure(fig, out)
    return out


def plot_p_delta(ax, cube: xr.Dataset, *, data_dim: int | None) -> None:
    """P(Delta > 0) over seeds against n (or n/d) at the first, a middle and the last checkpoint."""
    p = cube[names.P_DELTA_POS]
    steps = [s for s in cube[names.STEP].values if s > 0]
    picks = sorted({steps[len(steps) // 3], steps[2 * len(steps) // 3], steps[-1]})
    x = cube[names.N].values / (data_dim or 1)
    for step in picks:
        ax.plot(x, p.sel({names.STEP: step}).values, marker="o", label=f"step {step}")
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis, x)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("n / d" if data_dim else "n")
    ax.set_ylabel("P(E_TG - E_OG > 0) over seeds")
    ax.legend(fontsize=7)


def make_quality_figures(cube: xr.Dataset, fit: xr.Dataset, outdir: str | Path, *, title: str = "",
                         data_dim: int | None = None, only: set[str] | None = None) -> list[Path]:
    """The quality figures the cube and fit can fill (`only`: just these; asking for one they cannot
    fill, e.g. p_delta_pos without E_TG, is an error rather than a placeholder)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid", context="paper")
    metric = fit.attrs.get("tau_gen_metric")
    panels = {
        "timescales.png": lambda ax: plot_timescales(ax, fit),
        "quality_vs_step.png": (lambda ax: plot_quality(ax, cube, metric)) if metric else None,
        "loss_gap.png": lambda ax: plot_loss_gap(ax, cube),
        "p_delta_pos.png": (lambda ax: plot_p_delta(ax, cube, data_dim=data_dim)) if names.P_DELTA_POS in cube else None,
    }
    missing = {"quality_vs_step.png": "the fit has no tau_gen metric (fit.tau_gen_metric null)",
               "p_delta_pos.png": "the cube has no p_delta_pos (it needs quality.e_tg: true)"}
    written = []
    for name, draw in panels.items():
        if only is not None and name[:-4] not in only:
            continue
        if draw is None:
            if only is not None:
                raise ValueError(f"cannot draw {name}: {missing[name]}")
            continue
        written.append(single_panel_figure(draw, outdir / name, title=title))
    if only is None or "tau_gen_levels" in only:
        if f"{names.TAU_GEN_LEVELS}_exponent" in fit:
            written.append(make_tau_gen_levels_figure(cube, fit, outdir / "tau_gen_levels.png", title=title))
        elif only is not None:
            raise ValueError("cannot draw tau_gen_levels.png: the fit has no tau_gen_levels (no tau_gen metric, "
                             "or a fit.nc written before diffmem read tau_gen at common levels)")
    return written


def make_closed_form_figures(cube: xr.Dataset, fit: xr.Dataset, outdir: str | Path, *, title: str = "",
                             quality: bool = False, data_dim: int | None = None) -> list[Path]:
    """Closed-form families (one step): `f_mem_vs_n.png`, or with `quality` `quality_vs_n.png` (the
    preferred quality metric against n, and P(Delta > 0) against n/d when E_TG was computed)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid", context="paper")
    x = cube[names.N].values / (data_dim or 1)
    xlabel = "n / d" if data_dim else "training-set size n"
    if not quality:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        f = cube[names.F_MEM].isel({names.STEP: -1})
        ax.errorbar(x, f.mean(names.SEED).values, yerr=np.nan_to_num(f.std(names.SEED).values), marker="o", capsize=2)
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis, x)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f_mem_label(cube[names.F_MEM]))
        ax.set_title(title, fontsize=9)
        save_figure(fig, outdir / "f_mem_vs_n.png")
        return [outdir / "f_mem_vs_n.png"]
    metric = pick_quality_metric(cube, "auto")
    panels = [m for m in (metric, names.P_DELTA_POS) if m is not None and m in cube]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 3.6), squeeze=False)
    for ax, var in zip(axes[0], panels):
        v = cube[var].isel({names.STEP: -1})
        if names.SEED in v.dims:
            ax.errorbar(x, v.mean(names.SEED).values, yerr=np.nan_to_num(v.std(names.SEED).values), marker="o", capsize=2)
        else:
            ax.plot(x, v.values, marker="o")
            ax.axhline(0.5, color="k", lw=0.8, ls=":")
            ax.set_ylim(-0.05, 1.05)
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis, x)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(var if var != names.P_DELTA_POS else "P(E_TG - E_OG > 0) over seeds")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no quality metric in the cube", ha="center", transform=axes[0, 0].transAxes)
        axes[0, 0].set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, outdir / "quality_vs_n.png")
    return [outdir / "quality_vs_n.png"]


# The figure names (without .png) of each family; workflow/rules/common.smk holds the same lists.
MEMORIZATION_FIGURES = ("overview", "f_mem_vs_step", "f_mem_vs_step_over_n", "tau_mem_vs_n", "losses", "scaling")
QUALITY_FIGURES = ("timescales", "quality_vs_step", "loss_gap", "p_delta_pos", "tau_gen_levels")
CLOSED_FORM_FIGURES = ("f_mem_vs_n", "quality_vs_n")


def make_experiment_figures(cube: xr.Dataset, fit: xr.Dataset, outdir: str | Path, *, figures: list[str] | None = None,
                            quality: bool = False, closed_form: bool = False, title: str = "",
                            data_dim: int | None = None) -> list[Path]:
    """The figures `figures` (names without .png) of one experiment, memorization and quality ones together,
    each drawn by its family's function from the same cube and fit (with `closed_form`, the names are
    CLOSED_FORM_FIGURES). A name of no family, or one the cube and fit cannot fill, is a ValueError.
    Without `figures`: every memorization figure (closed form: f_mem_vs_n) and, with `quality`, every
    quality figure the cube and fit can fill."""
    family = CLOSED_FORM_FIGURES if closed_form else MEMORIZATION_FIGURES + QUALITY_FIGURES
    unknown = sorted(set(figures or ()) - set(family))
    if unknown:
        raise ValueError(f"no figure(s) {unknown} among the {'closed-form ' if closed_form else ''}figures "
                         f"({', '.join(family)})")
    if closed_form:
        wanted = set(figures) if figures is not None else {"f_mem_vs_n"} | ({"quality_vs_n"} if quality else set())
        return [path for name, with_quality in (("f_mem_vs_n", False), ("quality_vs_n", True)) if name in wanted
                for path in make_closed_form_figures(cube, fit, outdir, title=title, quality=with_quality,
                                                     data_dim=data_dim)]
    if figures is None:
        paths = make_figures(cube, fit, outdir, title=title)
        if quality:
            paths += make_quality_figures(cube, fit, outdir, title=title, data_dim=data_dim)
        return paths
    paths = []
    if memorization := set(figures) & set(MEMORIZATION_FIGURES):
        paths += make_figures(cube, fit, outdir, title=title, only=memorization)
    if of_quality := set(figures) & set(QUALITY_FIGURES):
        paths += make_quality_figures(cube, fit, outdir, title=title, data_dim=data_dim, only=of_quality)
    return paths


def compare_p_delta(cubes: list[xr.Dataset], dims: list[int], out: str | Path, *, labels: list[str] | None = None,
                    title: str = "") -> Path:
    """P(E_TG - E_OG > 0) at each cube's last step against n/d, one curve per cube (e.g. d = 8, 16, 32)."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, ax = plt.subplots(figsize=(5, 3.6))
    labels = labels or [f"d = {d}" for d in dims]
    xs = []
    for cube, d, label in zip(cubes, dims, labels):
        p = cube[names.P_DELTA_POS].isel({names.STEP: -1})
        x = cube[names.N].values / d
        xs.extend(x)
        ax.plot(x, p.values, marker="o", label=label)
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis, np.unique(xs))
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("n / d")
    ax.set_ylabel("P(E_TG - E_OG > 0) over seeds")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, out)
    return Path(out)

