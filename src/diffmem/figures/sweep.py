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

SWEEP_FIGURE = {names.WIDTH: "sweep_width.png", names.STRENGTH: "sweep_strength.png",
                names.TIKHONOV: "sweep_tikhonov.png"}
STRENGTH_LABEL = {names.STRENGTH: "regularization strength", names.TIKHONOV: "Tikhonov penalty c (training loss)"}


def fd_spaces(cube: xr.Dataset) -> list[str]:
    """The feature spaces whose FD the cube holds, data space last (classifier / Inception FD first)."""
    spaces = [v[len("fd_"):] for v in cube.data_vars
              if v.startswith("fd_") and not v.endswith(("_heldout", "_train"))]
    return sorted(spaces, key=lambda sp: sp == "data")


def plot_strength_sweep(cube: xr.Dataset, key: str):
    """f_mem and the FD of each feature space at the last checkpoint against the swept strength, per n.

    Points are seed means, bars the seed range (min to max). Where the cube holds the quality baselines
    (quality.baselines), each n's FD of held-out data against the same reference (dashed: what a generator
    of the data distribution scores) and of its training set resampled (dotted: what a perfect memorizer
    scores) are drawn as horizontal lines in the n's colour, so a strength that generalizes shows as low
    f_mem with FD near the dashed line, and one that only trades copies for noise as FD above the dotted.
    """
    values = cube[key].values
    spaces = fd_spaces(cube)
    fig, axes = plt.subplots(1, 1 + len(spaces), figsize=(5 * (1 + len(spaces)), 3.9), squeeze=False)
    pos = values[values > 0]
    lin = float(pos.min()) if pos.size else 1.0
    ncolors = sns.color_palette("viridis", n_colors=cube.sizes[names.N])

    def seed_errorbar(ax, da, color, label):
        mean = da.mean(names.SEED).values
        lo, hi = da.min(names.SEED).values, da.max(names.SEED).values
        ax.errorbar(values, mean, yerr=np.clip(np.nan_to_num(np.stack([mean - lo, hi - mean])), 0, None),
                    marker="o", color=color, label=label, capsize=2)

    ax = axes[0, 0]
    last = cube[names.F_MEM].isel({names.STEP: -1})
    for color, n in zip(ncolors, cube[names.N].values):
        seed_errorbar(ax, last.sel({names.N: n}), color, f"n = {n}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("f_mem at the last checkpoint")
    ax.legend(fontsize=7)
    for ax, space in zip(axes[0, 1:], spaces):
        fd = cube[names.FD.format(space=space)].isel({names.STEP: -1})
        held, train = names.FD_HELDOUT.format(space=space), names.FD_TRAIN.format(space=space)
        for color, n in zip(ncolors, cube[names.N].values):
            seed_errorbar(ax, fd.sel({names.N: n}), color, f"n = {n}")
            for var, style, what in ((held, "--", "held-out data"), (train, ":", "training set (memorizer)")):
                if var in cube:
                    level = float(cube[var].sel({names.N: n}).isel({key: 0}).mean(names.SEED))
                    ax.axhline(level, color=color, ls=style, lw=1,
                               label=f"{what}, n = {n}" if n == cube[names.N].values[0] else None)
        ax.set_yscale("log")
        ax.set_ylabel(f"FD ({space} space) at the last checkpoint")
        ax.legend(fontsize=6)
    for ax in axes[0]:
        ax.set_xscale("symlog", linthresh=lin)
        ax.set_xlim(-0.3 * lin if values.min() <= 0 else values.min() / 1.5, values.max() * 1.5)  # no empty negative side
        ax.set_xlabel(f"{STRENGTH_LABEL[key]} ({cube.attrs.get('regularization', '')})")
    return fig


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
        fig = plot_strength_sweep(cube, key)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = outdir / SWEEP_FIGURE[key]
    save_figure(fig, path)
    return path
