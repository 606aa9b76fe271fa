"""The random-features figures: rf_losses.png and rf_split_time.png (`diffmem rf-plot`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import xarray as xr

from diffmem import names
from diffmem.cube import data_dim
from diffmem.figures.common import ci_label, save_figure, seed_count


def _colors(count: int):
    return plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(count, 1)))


def _plot_losses(cube: xr.Dataset, fit: xr.Dataset | None, title: str):
    d = data_dim(cube)
    tau = cube[names.TAU].values
    keep = tau > 0  # log x
    panels = ((names.TRAIN_LOSS, "train loss"), (names.TEST_LOSS, "test loss"), (names.SCORE_ERROR, "score error"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharex=True)
    colors = _colors(cube.sizes[names.N])
    for ax, (var, label) in zip(axes, panels):
        for color, n in zip(colors, cube[names.N].values):
            curves = cube[var].sel({names.N: n}).values[:, keep]  # [seed, step]
            mean = np.nanmean(curves, axis=0)
            ax.plot(tau[keep], mean, color=color, label=f"psi_n = {n / d:g}")
            if curves.shape[0] > 1:
                ax.fill_between(tau[keep], np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=color,
                                alpha=0.15, lw=0)
            if fit is not None and var == names.TEST_LOSS and names.TAU_SPLIT in fit:
                split = fit[names.TAU_SPLIT].sel({names.N: n}).values
                if np.isfinite(split).any():
                    ax.axvline(float(np.exp(np.nanmean(np.log(split)))), color=color, ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tau = step lr / d^2")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, title="mean over seeds (band: min-max)", title_fontsize=7)
    if fit is not None and names.TAU_SPLIT in fit:
        how = ("half of the final gap" if fit.attrs.get("rf_split", "threshold") == "half_gap"
               else f"gap > {fit.attrs.get('rf_gap', '')}")
        axes[1].set_title(f"dotted: split time ({how})", fontsize=8)
    info = fit.attrs if fit is not None else cube.attrs
    fig.suptitle(title or f"random features: d = {d}, psi_p = {info.get('psi_p', float('nan')):g}, "
                 f"t = {info.get('rf_time', float('nan')):g}", fontsize=10)
    fig.tight_layout()
    return fig


def _plot_split(fit: xr.Dataset, title: str):
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    psi_n = fit[names.PSI_N].values
    d = fit.attrs.get("d", 1)
    grid = np.geomspace(psi_n.min() / 1.2, psi_n.max() * 1.2, 60)
    for var, color, label in ((names.TAU_SPLIT, "tab:red", "split time (measured)"),
                              (names.TAU_GEN, "tab:blue", "tau_gen (score error)")):
        if var not in fit:
            continue
        vals = fit[var].transpose(names.N, names.SEED).values  # [n, seed]
        for j in range(vals.shape[1]):
            ax.scatter(psi_n, vals[:, j], s=12, color=color, alpha=0.45, lw=0)
        if var == names.TAU_SPLIT and "gap_settled" in fit and fit.attrs.get("rf_split") == "half_gap":
            loose = fit["gap_settled"].transpose(names.N, names.SEED).values < 0.9
            if loose.any():
                ax.scatter(np.broadcast_to(psi_n[:, None], vals.shape)[loose], vals[loose], s=40, marker="x",
                           color="k", lw=1, label="gap not settled by the last checkpoint (lower bound)")
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # all seeds censored at some n
            geo = np.exp(np.nanmean(np.log(vals), axis=1))
            lo, hi = np.nanmin(vals, axis=1), np.nanmax(vals, axis=1)
        ok = np.isfinite(geo)
        yerr = np.clip([geo[ok] - lo[ok], hi[ok] - geo[ok]], 0.0, None)  # rounding when all seeds agree
        ax.errorbar(psi_n[ok], geo[ok], yerr=yerr, fmt="o", color=color, ms=5,
                    capsize=3, label=f"{label}: geometric mean, seed range")
        a, b = float(fit[f"{var}_prefactor"]), float(fit[f"{var}_exponent"])
        ci = fit[f"{var}_exponent_ci"].values
        if np.isfinite(b):
            ax.plot(grid, a * (grid * d) ** b, color=color, lw=1.2,
                    label=f"fit ~ psi_n^{b:.2f} {ci_label(ci[0], ci[1], seeds=seed_count(fit))}")
    if names.TAU_MEM_THEORY in fit:
        ax.plot(psi_n, fit[names.TAU_MEM_THEORY].values, "k--", marker="s", ms=4,
                label=f"theory tau_mem ~ psi_n^{float(fit[f'{names.TAU_MEM_THEORY}_exponent']):.2f}\n"
                      "(paper's psi_p / (Delta_t lambda_min) convention)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(sorted(psi_n)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("psi_n = n / d")
    ax.set_ylabel("tau = step lr / d^2")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6.5)
    how = ("half-gap time" if fit.attrs.get("rf_split", "threshold") == "half_gap"
           else f"gap > {fit.attrs.get('rf_gap', 0):g}")
    ax.set_title(f"{title + ': ' if title else ''}d = {d}, psi_p = {fit.attrs.get('psi_p', 0):g}, "
                 f"t = {fit.attrs.get('rf_time', 0):g}, {fit.attrs.get('solver', '')}, split = {how}", fontsize=8)
    fig.tight_layout()
    return fig


def make_rf_figures(cube: xr.Dataset, fit: xr.Dataset, outdir: str | Path, *, title: str = "") -> list[Path]:
    """Write rf_losses.png (losses and score error vs tau per psi_n) and rf_split_time.png; return the paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in (("rf_losses.png", _plot_losses(cube, fit, title)), ("rf_split_time.png", _plot_split(fit, title))):
        save_figure(fig, outdir / name)
        written.append(outdir / name)
    return written
