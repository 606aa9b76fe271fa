"""The linear_exact figures: p_delta_vs_psi_n.png, n_half_vs_d.png, e_tg_e_og.png and kl_generated.png
(`diffmem linear-exact plot`).

With several population sizes N (model.linear_populations): P(Delta > 0) in one panel per N, with the oracle
control (the population law itself) dashed; n_half against d with one series per N; the distances at the
largest N."""

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


def _by_population(ds: xr.Dataset) -> list[tuple[int | None, xr.Dataset]]:
    """(N, the fit at N) for each population size; a fit written before it had num_population: [(None, fit)]."""
    if names.NUM_POPULATION not in ds.dims:
        return [(None, ds)]
    # N = 0: a cube without population sizes whose size was not recorded (stages.linear_exact.fit_transition)
    return [(int(v) or None, ds.sel({names.NUM_POPULATION: v})) for v in ds[names.NUM_POPULATION].values]


def _fig_p_delta(fit: xr.Dataset, title: str):
    pops = _by_population(fit)
    fig, axes = plt.subplots(1, len(pops), figsize=(5.6 * len(pops), 4), squeeze=False)
    for ax, (size, sel_n) in zip(axes[0], pops):
        for k, d in enumerate(sel_n[names.DIM].values):
            sel = sel_n.sel({names.DIM: d})
            x = sel[names.PSI_N].values
            ax.errorbar(x, sel[names.P_DELTA_POS].values, yerr=sel[names.P_DELTA_SE].values, marker="o", ms=3,
                        capsize=2, color=f"C{k}", label=f"d = {int(d)}")
            if names.P_DELTA_POS_ORACLE in sel:
                ax.plot(x, sel[names.P_DELTA_POS_ORACLE].values, ls="--", lw=0.9, color=f"C{k}")
        if names.P_DELTA_POS_ORACLE in sel_n:
            ax.plot([], [], ls="--", color="gray", label="dashed: the population law itself\n(oracle: should be 1)")
        ax.axhline(0.5, color="k", lw=0.8, ls=":")
        ax.set_xscale("log")
        _psi_ticks(ax, fit[names.PSI_N].values)
        ax.set_xlabel("n / d")
        ax.set_ylabel("P(E_TG - E_OG > 0)")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        where = "" if size is None else f", N = {size}"
        ax.set_title(f"{title}: {fit.attrs.get('variant', '')}, L2{where}, {fit.attrs.get('num_repeats', '?')} "
                     "repeats\n(error bars: binomial s.e.)", fontsize=8)
    fig.tight_layout()
    return fig


def _fig_n_half(fit: xr.Dataset, title: str):
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.5, 4))
    pops = _by_population(fit)
    d = fit[names.DIM].values.astype(float)
    for j, (size, sel) in enumerate(pops):
        color, last = f"C{j}", j == len(pops) - 1
        where = "" if size is None else f"N = {size}: "
        half = sel[names.N_HALF].values
        ci = sel[names.N_HALF_CI].values
        cens = sel["n_half_censored"].values.astype(bool)
        yerr = np.abs(np.stack([half - ci[:, 0], ci[:, 1] - half]))
        ax.errorbar(d[~cens], half[~cens], yerr=yerr[:, ~cens], fmt="o", color=color, capsize=3,
                    label=f"{where}n_half (95 % bootstrap CI)")
        ax2.errorbar(d[~cens], half[~cens] / d[~cens], yerr=yerr[:, ~cens] / d[~cens], fmt="o-", color=color,
                     capsize=3, label=where.rstrip(": ") or None)
        if cens.any():
            n_grid = sel[names.N].values
            for k in np.flatnonzero(cens):  # mark where the grid ends instead of a point
                above = sel[names.P_DELTA_POS].values[k, 0] >= 0.5
                ax.plot(d[k], n_grid[k, 0] if above else n_grid[k, -1], "v" if above else "^", color=color, alpha=0.6,
                        label=f"{where}censored: crossing below / above the n grid" if k == np.flatnonzero(cens)[0]
                        else None)
        b, a = float(sel["n_half_exponent"]), float(sel["n_half_prefactor"])
        lo, hi = sel["n_half_exponent_ci"].values
        grid = np.geomspace(d.min(), d.max(), 50)
        if np.isfinite(b):
            ax.plot(grid, a * grid**b, "--", color=color, label=f"{where}power-law fit d^{b:.2f} {ci_label(lo, hi)}")
        ok = ~cens & np.isfinite(half)
        dd, hh = d[ok], half[ok]
        if last:  # local log-log slopes between neighbouring d, for the largest N
            if dd.size:
                ax.plot(grid, hh[0] * grid / dd[0], "k:", lw=0.8, label="slope 1 (n proportional to d)")
            for k in range(dd.size - 1):
                slope = np.log(hh[k + 1] / hh[k]) / np.log(dd[k + 1] / dd[k])
                ax.annotate(f"{slope:.2f}", (np.sqrt(dd[k] * dd[k + 1]), np.sqrt(hh[k] * hh[k + 1])), fontsize=7,
                            color="C3", ha="right", va="bottom")
    for axis in (ax, ax2):
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(mticker.FixedLocator(sorted(d)))
        axis.xaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.xaxis.set_minor_formatter(mticker.NullFormatter())
        axis.set_xlabel("d")
        axis.grid(True, which="both", alpha=0.3)
    ax.set_yscale("log")
    ax.set_ylabel("n_half (P(Delta > 0) = 1/2)")
    ax2.set_ylabel("n_half / d")
    ax.legend(fontsize=6)
    if len(pops) > 1:
        ax2.legend(fontsize=6)
    ax.set_title(f"{title}: crossing against d (red: local slopes{', largest N' if len(pops) > 1 else ''};\n"
                 "CIs: sampling only)", fontsize=8)
    ax2.set_title("n_half / d: constant if n_half is proportional to d", fontsize=8)
    fig.tight_layout()
    return fig


def _fig_e(cube: xr.Dataset, title: str):
    size = None
    if names.NUM_POPULATION in cube.dims:  # the largest N
        size = int(cube[names.NUM_POPULATION].max())
        cube = cube.sel({names.NUM_POPULATION: size})
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
    where = "" if size is None else f", population N = {size}"
    fig.suptitle(f"{title}: L2 distances in units of (4 pi sigma^2)^(-d/2){where}", fontsize=9)
    fig.tight_layout()
    return fig


def _fig_kl(fit: xr.Dataset, title: str):
    """The generated Gaussian's KL to the population law per dimension, median over repeats, against n / d:
    +inf (drawn at the top edge) while n <= d, where the generated covariance is singular."""
    fig, ax = plt.subplots(figsize=(5.6, 4))
    if "kl_generated_median" not in fit:  # a cube written before diffmem recorded the KL
        ax.text(0.5, 0.5, "no kl_generated in this cube:\nits per-d files predate it (rerun linear-exact run)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    kl = fit["kl_generated_median"]
    finite = kl.values[np.isfinite(kl.values)]
    top = float(finite.max() / fit[names.DIM].values.min()) * 2 if finite.size else 1.0
    for k, d in enumerate(fit[names.DIM].values):
        sel = kl.sel({names.DIM: d})
        x, y = sel[names.PSI_N].values, sel.values / float(d)
        ok = np.isfinite(y)
        ax.plot(x[ok], y[ok], marker="o", ms=3, color=f"C{k}", label=f"d = {int(d)}")
        ax.plot(x[~ok], np.full((~ok).sum(), top), marker="^", ls="none", color=f"C{k}")
    ax.plot([], [], marker="^", ls="none", color="gray", label="+inf (singular: rank <= n - 1 < d)")
    ax.axvline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _psi_ticks(ax, fit[names.PSI_N].values)
    ax.set_xlabel("n / d")
    ax.set_ylabel("KL(generated || N(0, I)) / d, median over repeats (nats)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{title}: the generated Gaussian in closed form (finite from n = d + 1)", fontsize=8)
    fig.tight_layout()
    return fig


def make_linear_exact_figures(cube: xr.Dataset, fit: xr.Dataset, outdir: str | Path, *, title: str = "") -> list[Path]:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    figs = {"p_delta_vs_psi_n": _fig_p_delta(fit, title), "n_half_vs_d": _fig_n_half(fit, title),
            "e_tg_e_og": _fig_e(cube, title), "kl_generated": _fig_kl(fit, title)}
    paths = []
    for name, fig in figs.items():
        save_figure(fig, outdir / f"{name}.png")
        paths.append(outdir / f"{name}.png")
    return paths
