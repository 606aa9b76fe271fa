"""The linear_exact figures: p_delta_vs_psi_n.png, n_half_vs_d.png, e_tg_e_og.png (`diffmem linear-exact plot`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import xarray as xr

from diffmem import names
from diffmem.figures.common import ci_label, save_figure


def _psi_ticks(ax, values) -> None:
    ax.xaxis.set_major_locator(mticker.FixedLocator(sorted(values)))
    ax.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())


def _fig_p_delta(fit: xr.Dataset, title: str):
    fig, ax = plt.subplots(figsize=(5.6, 4))
    for d in fit[names.DIM].values:
        sel = fit.sel({names.DIM: d})
        ax.errorbar(sel[names.PSI_N].values, sel[names.P_DELTA_POS].values, yerr=sel[names.P_DELTA_SE].values, marker="o",
                    ms=3, capsize=2, label=f"d = {int(d)}")
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    _psi_ticks(ax, fit[names.PSI_N].values)
    ax.set_xlabel("n / d")
    ax.set_ylabel("P(E_TG - E_OG > 0)")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{title}: {fit.attrs.get('variant', '')}, L2, {fit.attrs.get('num_repeats', '?')} repeats\n"
                 "(error bars: binomial s.e.)", fontsize=8)
    fig.tight_layout()
    return fig


def _fig_n_half(fit: xr.Dataset, title: str):
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.5, 4))
    d = fit[names.DIM].values.astype(float)
    half = fit[names.N_HALF].values
    ci = fit[names.N_HALF_CI].values
    cens = fit["n_half_censored"].values.astype(bool)
    yerr = np.abs(np.stack([half - ci[:, 0], ci[:, 1] - half]))
    ax.errorbar(d[~cens], half[~cens], yerr=yerr[:, ~cens], fmt="o", capsize=3, label="n_half (95 % bootstrap CI)")
    ax2.errorbar(d[~cens], half[~cens] / d[~cens], yerr=yerr[:, ~cens] / d[~cens], fmt="o-", capsize=3)
    if cens.any():
        n_grid = fit[names.N].values
        for k in np.flatnonzero(cens):  # mark where the grid ends instead of a point
            above = fit[names.P_DELTA_POS].values[k, 0] >= 0.5
            ax.plot(d[k], n_grid[k, 0] if above else n_grid[k, -1], "v" if above else "^", color="gray",
                    label="censored: crossing below / above the n grid" if k == np.flatnonzero(cens)[0] else None)
    b, a = float(fit["n_half_exponent"]), float(fit["n_half_prefactor"])
    lo, hi = fit["n_half_exponent_ci"].values
    grid = np.geomspace(d.min(), d.max(), 50)
    if np.isfinite(b):
        ax.plot(grid, a * grid**b, "C0--", label=f"power-law fit d^{b:.2f} {ci_label(lo, hi)}\n"
                                                 "(CI: sampling only; see the local slopes)")
        ax.plot(grid, half[~cens][0] * grid / d[~cens][0], "k:", lw=0.8, label="slope 1 (n proportional to d)")
    ok = ~cens & np.isfinite(half)
    dd, hh = d[ok], half[ok]
    for k in range(dd.size - 1):  # local log-log slopes between neighbouring d
        slope = np.log(hh[k + 1] / hh[k]) / np.log(dd[k + 1] / dd[k])
        ax.annotate(f"{slope:.2f}", (np.sqrt(dd[k] * dd[k + 1]), np.sqrt(hh[k] * hh[k + 1])), fontsize=7,
                    color="C3", ha="right", va="bottom")
    for axis in (ax, ax2):
        axis.set_xscale("log")
        axis.set_xlabel("d")
        axis.grid(True, which="both", alpha=0.3)
    ax.set_yscale("log")
    ax.set_ylabel("n_half (P(Delta > 0) = 1/2)")
    ax2.set_ylabel("n_half / d")
    ax.legend(fontsize=6.5)
    ax.set_title(f"{title}: crossing against d (red: local slopes)", fontsize=8)
    ax2.set_title("n_half / d: constant if n_half is proportional to d", fontsize=8)
    fig.tight_layout()
    return fig


def _fig_e(cube: xr.Dataset, title: str):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for k, d in enumerate(cube[names.DIM].values):
        sel = cube.sel({names.DIM: d})
        x = sel[names.PSI_N].values
        for ax, key, style in ((axes[0], names.E_TG, "-"), (axes[0], names.E_OG, "--")):
            ax.plot(x, sel[key].median(names.SEED).values, style, color=f"C{k}", marker="o", ms=3,
                    label=f"d={int(d)}" if key == names.E_TG else None)
        dm = sel[names.DELTA].mean(names.SEED).values
        ds = sel[names.DELTA].std(names.SEED).values
        axes[1].errorbar(x, dm / ds, color=f"C{k}", marker="o", ms=3, label=f"d = {int(d)}")
    axes[0].set_title("median E_TG (solid) and E_OG (dashed); symlog below 1e-12", fontsize=8)
    axes[0].set_yscale("symlog", linthresh=1e-12)
    axes[1].axhline(0, color="k", lw=0.8, ls=":")
    axes[1].set_title("mean(Delta) / sd(Delta) over repeats", fontsize=8)
    for ax in axes:
        ax.set_xscale("log")
        _psi_ticks(ax, cube[names.PSI_N].values)
        ax.set_xlabel("n / d")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"{title}: L2 distances in units of (4 pi sigma^2)^(-d/2)", fontsize=9)
    fig.tight_layout()
    return fig


def make_linear_exact_figures(cube: xr.Dataset, fit: xr.Dataset, outdir: str | Path, *, title: str = "") -> list[Path]:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    figs = {"p_delta_vs_psi_n": _fig_p_delta(fit, title), "n_half_vs_d": _fig_n_half(fit, title),
            "e_tg_e_og": _fig_e(cube, title)}
    paths = []
    for name, fig in figs.items():
        save_figure(fig, outdir / f"{name}.png")
        paths.append(outdir / f"{name}.png")
    return paths
