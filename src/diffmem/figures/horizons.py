"""`horizons.png`: the exponent b of tau_mem ~ n^b against the training length S (`diffmem.horizons`).

Four panels: f_mem against step per n (mean and range over seeds) with the horizons marked; tau_mem
(raw f_mem) against n at each horizon (geometric mean over the seeds that memorized by S); b against
S with its CI, on raw f_mem and on f_mem divided by its value at S (open markers: some run is
censored at S, so b is biased low there); the local slopes (raw f_mem) between consecutive n against
S with their CIs. The exponent and slope axes are clipped (-0.5 to 2, -1 to 3): a CI from two seeds
or two n can span several units.

Drawn by `diffmem horizons-plot --cube cube.nc --horizons horizons.nc --out figures/horizons.png`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import xarray as xr

from diffmem import names
from diffmem.figures.common import f_mem_label, plain_log_ticks, save_figure
from diffmem.horizons import HORIZON, TAU_MEM_HORIZONS


def _palette(count: int):
    return sns.color_palette("viridis", n_colors=count)


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", transform=ax.transAxes)
    ax.set_axis_off()


def plot_f_mem_with_horizons(ax, cube: xr.Dataset, horizons: np.ndarray) -> None:
    """f_mem against step per n, the seed mean as a line and the seed range shaded; horizons as dotted lines."""
    f_mem = cube[names.F_MEM]
    steps = f_mem[names.STEP].values
    keep = steps > 0
    for color, n in zip(_palette(f_mem.sizes[names.N]), f_mem[names.N].values):
        curves = f_mem.sel({names.N: n}).transpose(names.SEED, names.STEP).values[:, keep]
        ok = np.isfinite(curves).any(axis=0)
        x = steps[keep][ok]
        with np.errstate(invalid="ignore"):
            ax.plot(x, np.nanmean(curves[:, ok], axis=0), color=color, marker="o", markersize=2, label=f"n = {int(n)}")
            ax.fill_between(x, np.nanmin(curves[:, ok], axis=0), np.nanmax(curves[:, ok], axis=0), color=color,
                            alpha=0.2, lw=0)
    for h in horizons:
        ax.axvline(h, color="0.5", lw=0.7, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training step (dotted: the horizons S)")
    ax.set_ylabel(f_mem_label(f_mem))
    ax.legend(fontsize=7, title="mean, seed range", title_fontsize=7)


def plot_tau_by_horizon(ax, readout: xr.Dataset) -> None:
    """tau_mem against n at each horizon: geometric means over the uncensored seeds."""
    tau = readout[TAU_MEM_HORIZONS]
    n = tau[names.N].values
    if not bool(tau.notnull().any()):
        _empty(ax, "no run memorized by any horizon")
        return
    horizons = readout[HORIZON].values
    for color, h in zip(_palette(horizons.size), horizons):
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.exp(np.log(tau.sel({HORIZON: h})).mean(names.SEED, skipna=True)).values
        ax.plot(n, mean, color=color, marker="o", label=f"S = {int(h):,}")
        censored = tau.sel({HORIZON: h}).isnull().any(names.SEED).values
        if censored.any():  # a run censored at S: tau_mem > S there
            ax.scatter(n[censored], np.full(censored.sum(), h), marker="^", facecolors="white", edgecolors=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.xaxis, n)
    ax.set_xlabel("n")
    ax.set_ylabel(f"tau_mem (f_mem >= {readout.attrs.get('tau_mem_threshold')}), run cut at S")
    ax.scatter([], [], marker="^", facecolors="white", edgecolors="k", label="a seed censored (tau_mem > S)")
    ax.legend(fontsize=6)


def plot_exponent_vs_horizon(ax, readout: xr.Dataset) -> None:
    """b against S with its CI (n points and seeds), on raw and on normalized f_mem; open markers where some
    run is censored at S (their count beside it)."""
    horizons = readout[HORIZON].values.astype(float)
    styles = {"raw": ("tab:red", "o", "f_mem"), "final": ("tab:blue", "s", "f_mem / f_mem at S")}
    for k, norm in enumerate(readout[names.NORMALIZATION].values):
        color, marker, what = styles[str(norm)]
        part = readout.sel({names.NORMALIZATION: norm})
        b = part[f"{TAU_MEM_HORIZONS}_exponent"].values
        ci = part[f"{TAU_MEM_HORIZONS}_exponent_ci"].transpose(HORIZON, names.CI_BOUND).values
        censored = part[f"{TAU_MEM_HORIZONS}_censored"].sum((names.N, names.SEED)).values
        x = horizons * (1 + 0.04 * (k - 0.5))  # small offsets so the error bars do not overlap
        err = np.abs(np.stack([b - ci[:, 0], ci[:, 1] - b]))
        ax.errorbar(x, b, yerr=np.nan_to_num(err), color=color, capsize=3, lw=0.8, marker="none")
        full = censored == 0
        ax.scatter(x[full], b[full], color=color, marker=marker, zorder=3, label=f"b on {what}")
        ax.scatter(x[~full], b[~full], facecolors="white", edgecolors=color, marker=marker, zorder=3)
        for h, count, value in zip(x, censored, b):
            if count and np.isfinite(value):
                ax.annotate(f"{int(count)}", (h, value), xytext=(4, 4), textcoords="offset points", fontsize=6,
                            color=color)
    ax.scatter([], [], marker="o", facecolors="white", edgecolors="k",
               label="open: runs censored at S (count), b biased low")
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    ax.axhline(0.5, color="k", lw=0.6, ls=":")
    ax.set_ylim(-0.5, 2.0)  # the CI of a reading from two or three n can span several units: clipped
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis, horizons)
    ax.set_xlabel("training length S (steps)")
    ax.set_ylabel(f"exponent b of tau_mem ~ n^b (level {readout.attrs.get('tau_mem_threshold')}, 95 % CI)")
    ax.legend(fontsize=6)


def plot_local_slopes_vs_horizon(ax, readout: xr.Dataset) -> None:
    """Each segment's local slope (between consecutive n) against S with its Welch CI."""
    horizons = readout[HORIZON].values.astype(float)
    slopes = readout[f"{TAU_MEM_HORIZONS}_{names.LOCAL_SLOPE}"].transpose(HORIZON, names.SEGMENT)
    if not bool(np.isfinite(slopes.values).any()):
        _empty(ax, "no local slope: fewer than two n memorized by any horizon")
        return
    ci = readout[f"{TAU_MEM_HORIZONS}_{names.LOCAL_SLOPE_CI}"].transpose(HORIZON, names.SEGMENT, names.CI_BOUND).values
    n_lo, n_hi = slopes[names.N_LO].values, slopes[names.N_HI].values
    count = slopes.sizes[names.SEGMENT]
    for k, color in zip(range(count), sns.color_palette("deep", n_colors=count)):
        y = slopes.values[:, k]
        x = horizons * (1 + 0.05 * (k - (count - 1) / 2))  # small offsets so the error bars do not overlap
        err = np.abs(np.stack([y - ci[:, k, 0], ci[:, k, 1] - y]))
        ax.errorbar(x, y, yerr=np.nan_to_num(err), color=color, marker="o", markersize=3, capsize=2, lw=0.8,
                    label=f"n = {int(n_lo[k])} -> {int(n_hi[k])}")
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    ax.set_ylim(-1.0, 3.0)  # Welch CIs from two seeds are wide: clipped
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis, horizons)
    ax.set_xlabel("training length S (steps)")
    ax.set_ylabel("local slope d log tau_mem / d log n, raw f_mem (95 % CI)")
    ax.legend(fontsize=6)


def make_horizons_figure(cube: xr.Dataset, readout: xr.Dataset, out: str | Path, *, title: str = "") -> Path:
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    plot_f_mem_with_horizons(axes[0, 0], cube, readout[HORIZON].values)
    raw = readout.sel({names.NORMALIZATION: "raw"})
    plot_tau_by_horizon(axes[0, 1], raw)
    plot_exponent_vs_horizon(axes[1, 0], readout)
    plot_local_slopes_vs_horizon(axes[1, 1], raw)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    save_figure(fig, out)
    return out
