"""The sweep figure: sweep_width.png or sweep_strength.png (what each shows: `diffmem.stages.sweep`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.ticker import NullFormatter

from diffmem import names
from diffmem.figures.common import ci_label, save_figure, seed_count
from diffmem.onsets import pick_quality_metric

SWEEP_FIGURE = {names.WIDTH: "sweep_width.png", names.STRENGTH: "sweep_strength.png"}


def plot_width_collapse(ax, fit: xr.Dataset, colors) -> None:
    """tau_mem * W against n per width (geometric mean over seeds, bars: seed range) and the joint fit."""
    scaled = fit[names.TAU_MEM_TIMES_WIDTH]
    n = scaled[names.N].values
    for color, w in zip(colors, scaled[names.WIDTH].values):
        v = scaled.sel({names.WIDTH: w}).values  # [N, S]
        with np.errstate(all="ignore"):
            geo = np.exp(np.nanmean(np.log(v), axis=1))
            lo, hi = np.nanmin(v, axis=1), np.nanmax(v, axis=1)
        ax.errorbar(n, geo, yerr=np.clip(np.nan_to_num(np.stack([geo - lo, hi - geo])), 0, None), marker="o", color=color,
                    capsize=2, label=f"width {w:g}")
    b, a = float(fit[f"{names.TAU_MEM_TIMES_WIDTH}_exponent"]), float(fit[f"{names.TAU_MEM_TIMES_WIDTH}_prefactor"])
    if np.isfinite(b):
        lo, hi = fit[f"{names.TAU_MEM_TIMES_WIDTH}_exponent_ci"].values
        p_value = float(fit[f"{names.TAU_MEM_TIMES_WIDTH}_{names.LOF_PVALUE}"])
        grid = np.geomspace(n.min() / 1.2, n.max() * 1.2, 40)
        collapse_p = float(fit[f"{names.TAU_MEM_TIMES_WIDTH}_collapse_pvalue"])
        ax.plot(grid, a * grid**b, "k--", label=f"all widths: b = {b:.2f} {ci_label(lo, hi, seeds=seed_count(fit))}\n"
                                               f"lack-of-fit p = {p_value:.2g}, widths differ p = {collapse_p:.2g}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("training-set size n")
    ax.set_ylabel("tau_mem x width (steps)")
    ax.legend(fontsize=7)


def make_sweep_figure(cube: xr.Dataset, fit: xr.Dataset, outdir: str | Path, *, title: str = "") -> Path:
    key = cube.attrs.get("sweep") or (names.WIDTH if names.WIDTH in cube.dims else names.STRENGTH)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid", context="paper")
    threshold = fit.attrs.get("tau_mem_threshold")  # fit.tau_mem_threshold, as the fit stage used it
    values = cube[key].values
    colors = sns.color_palette("viridis", n_colors=len(values))
    if key == names.WIDTH:
        collapse = names.TAU_MEM_TIMES_WIDTH in fit and bool(np.isfinite(fit[names.TAU_MEM_TIMES_WIDTH].values).any())  # else nothing to log-scale
        fig, axes = plt.subplots(1, 3 if collapse else 2, figsize=(15 if collapse else 10, 3.8))
        ax, ax2 = axes[0], axes[1]
        if collapse:
            plot_width_collapse(axes[2], fit, colors)
        n = fit[names.N].values
        for color, w in zip(colors, values):
            f = fit[names.F_MEM_FINAL].sel({key: w}).values
            se = fit[names.F_MEM_FINAL_SE].sel({key: w}).values
            label = f"width {w:g} ({int(cube[names.N_PARAMS].sel({key: w})):,} params)"
            ax.errorbar(n, f, yerr=np.nan_to_num(se), marker="o", color=color, label=label, capsize=2)
        if threshold is not None:
            ax.axhline(float(threshold), color="k", lw=0.8, ls=":", label=f"threshold {float(threshold):g}")
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("training-set size n")
        ax.set_ylabel("f_mem at the last checkpoint")
        ax.legend(fontsize=7)
        params = cube[names.N_PARAMS].values
        n_star = fit[names.N_STAR].values
        top = float(np.max(n))
        ok = np.isfinite(n_star)
        ax2.plot(params[ok], n_star[ok], marker="o", color="C3", label="n* (largest n memorizing at the end)")
        capped = ok & (n_star >= top)
        if capped.any():
            ax2.scatter(params[capped], n_star[capped], marker="^", s=80, facecolors="none", edgecolors="k",
                        label="n* = largest n tried (a lower bound)", zorder=3)
        if (~ok).any():
            ax2.scatter(params[~ok], np.full((~ok).sum(), float(np.min(n)) / 2), marker="v", color="grey",
                        label="no n memorizes", zorder=3)
        ax2.set_xscale("log")
        # one labelled tick per network: a log axis spanning less than a decade labels its minor
        # ticks too, and they overlap
        ax2.set_xticks(params, [f"{p / 1000:.3g}k" if p >= 1000 else f"{p:g}" for p in params])
        ax2.xaxis.set_minor_formatter(NullFormatter())
        ax2.set_yscale("log", base=2)
        ax2.set_xlabel("number of parameters")
        ax2.set_ylabel("n*")
        ax2.legend(fontsize=7)
    else:
        metric = pick_quality_metric(cube, "auto")
        fig, axes = plt.subplots(1, 2 if metric else 1, figsize=(10 if metric else 5, 3.8), squeeze=False)
        ax = axes[0, 0]
        pos = values[values > 0]
        lin = float(pos.min()) if pos.size else 1.0
        last = cube[names.F_MEM].isel({names.STEP: -1})
        ncolors = sns.color_palette("viridis", n_colors=cube.sizes[names.N])
        for color, n in zip(ncolors, cube[names.N].values):
            f = last.sel({names.N: n})
            ax.errorbar(values, f.mean(names.SEED).values, yerr=np.nan_to_num(f.std(names.SEED).values),
                        marker="o", color=color, label=f"n = {n}", capsize=2)
        ax.set_xscale("symlog", linthresh=lin)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"regularization strength ({cube.attrs.get('regularization', '')})")
        ax.set_ylabel("f_mem")
        ax.legend(fontsize=7)
        if metric:
            ax2 = axes[0, 1]
            q = cube[metric].isel({names.STEP: -1})
            for color, n in zip(ncolors, cube[names.N].values):
                ax2.plot(values, q.sel({names.N: n}).mean(names.SEED).values, marker="o", color=color, label=f"n = {n}")
            ax2.set_xscale("symlog", linthresh=lin)
            ax2.set_xlabel("regularization strength")
            ax2.set_ylabel(f"{metric} (last step, mean over seeds)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = outdir / SWEEP_FIGURE[key]
    save_figure(fig, path)
    return path
