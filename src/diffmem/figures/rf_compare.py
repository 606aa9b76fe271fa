"""rf_compare.png: several random-features experiments on one setup, read the same way (`diffmem rf-compare`).

Three panels: (a) the half-gap split time against psi_n for each experiment (geometric mean over seeds,
seed range, power-law fit with its CI) with the theory's tau_mem and, where the runs recorded U's spectrum,
the theory's formula at the run's own edge (tau_mem_edge); (b) the exponent of the split time read at each
fraction of the final gap (tau_split_levels) with its bootstrap CI, against the theory's and the edge's
exponents; (c) the spectrum of U in one flow experiment (fraction of eigenvalues <= lambda, per psi_n)
against the theory's (an atom at s_t^2 holding 1 - psi_n / psi_p, the rest Marchenko-Pastur); (d) where the
runs recorded the mode split (issue 22), the half-gap exponent of the whole gap, of the gap of A restricted
to U's top n eigenvectors (the theory's memorization bulk) and of the gap of the rest, per experiment, with
the theory's exponent.  Fits from cubes without the mode split get no panel (d), and a note says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from diffmem import names
from diffmem.families.random_features import rf_coefficients, theory_bulk_edges, theory_spectrum_cdf
from diffmem.figures.common import ci_label, plain_log_ticks, save_figure, seed_count

__all__ = ["make_rf_compare"]


def _geo(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.exp(np.nanmean(np.log(vals), axis=1)), np.nanmin(vals, axis=1), np.nanmax(vals, axis=1)


def _split_panel(ax, fits: Sequence[tuple[str, xr.Dataset]], colors) -> None:
    first = fits[0][1]
    psi_n = first[names.PSI_N].values
    d = first.attrs.get("d", 1)
    grid = np.geomspace(psi_n.min() / 1.15, psi_n.max() * 1.15, 40)
    for k, ((label, fit), color) in enumerate(zip(fits, colors)):
        vals = fit[names.TAU_SPLIT].transpose(names.N, names.SEED).values
        geo, lo, hi = _geo(vals)
        shift = 1.0 + 0.03 * (k - (len(fits) - 1) / 2)  # side by side, not on top of each other
        ax.errorbar(psi_n * shift, geo, yerr=np.clip([geo - lo, hi - geo], 0, None), fmt="o", ms=4, capsize=2,
                    color=color)
        a, b = float(fit[f"{names.TAU_SPLIT}_prefactor"]), float(fit[f"{names.TAU_SPLIT}_exponent"])
        ci = fit[f"{names.TAU_SPLIT}_exponent_ci"].values
        ax.plot(grid, a * (grid * d) ** b, color=color, lw=1.1,
                label=f"{label}: psi_n^{b:.2f} {ci_label(ci[0], ci[1], seeds=seed_count(fit))}")
    ax.plot(psi_n, first[names.TAU_MEM_THEORY].values, "k--", marker="s", ms=3,
            label=f"theory tau_mem: psi_n^{float(first[f'{names.TAU_MEM_THEORY}_exponent']):.2f}")
    edged = [(label, fit) for label, fit in fits if names.TAU_MEM_EDGE in fit]
    if edged:
        label, fit = edged[0]
        geo, _, _ = _geo(fit[names.TAU_MEM_EDGE].transpose(names.N, names.SEED).values)
        ax.plot(psi_n, geo, "k:", marker="^", ms=4,
                label=f"theory's formula at the runs' own U edge ({label}): "
                      f"psi_n^{float(fit[f'{names.TAU_MEM_EDGE}_exponent']):.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.xaxis, psi_n)
    ax.set_xlabel("psi_n = n / d")
    ax.set_ylabel("half-gap split time tau")
    ax.set_title("(a) split time (half the final gap); bars: seed range", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=5.5)


def _level_panel(ax, fits: Sequence[tuple[str, xr.Dataset]], colors) -> None:
    first = fits[0][1]
    for k, ((label, fit), color) in enumerate(zip(fits, colors)):
        if f"{names.TAU_SPLIT_LEVELS}_exponent" not in fit:
            continue
        q = fit[names.GAP_LEVEL].values
        b = fit[f"{names.TAU_SPLIT_LEVELS}_exponent"].values
        ci = fit[f"{names.TAU_SPLIT_LEVELS}_exponent_ci"].transpose(names.GAP_LEVEL, names.CI_BOUND).values
        x = q + 0.008 * (k - (len(fits) - 1) / 2)
        yerr = np.where(np.isfinite(ci.T), np.abs(ci.T - b), 0.0)
        ax.errorbar(x, b, yerr=yerr, fmt="o-", ms=4, capsize=2, lw=1, color=color, label=label)
    ax.axhline(float(first[f"{names.TAU_MEM_THEORY}_exponent"]), color="k", ls="--", lw=1,
               label="theory tau_mem")
    edged = [fit for _, fit in fits if f"{names.TAU_MEM_EDGE}_exponent" in fit]
    if edged:
        ax.axhline(float(edged[0][f"{names.TAU_MEM_EDGE}_exponent"]), color="k", ls=":", lw=1,
                   label="theory's formula at the runs' U edge")
    ax.set_xlabel("gap level q (split time: gap reaches q x its final value)")
    ax.set_ylabel("exponent b of tau_q ~ psi_n^b (95% bootstrap CI)")
    ax.set_title("(b) exponent against the gap level read", fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)


MODE_READS = ((names.TAU_SPLIT, "whole gap"), (names.TAU_SPLIT_BULK, "bulk only:\nU's top n modes"),
              (names.TAU_SPLIT_OUTSIDE, "outside the bulk:\nU's other p - n modes"))


def _has_mode_split(fit: xr.Dataset) -> bool:
    """Whether a fit holds the split times of the gap by modes of U (rf_fit of a cube with the mode split)."""
    return all(f"{prefix}_exponent" in fit for prefix, _ in MODE_READS)


def _mode_panel(ax, fits: Sequence[tuple[str, xr.Dataset]], colors) -> None:
    first = fits[0][1]
    x = np.arange(len(MODE_READS))
    for k, ((label, fit), color) in enumerate(zip(fits, colors)):
        if not _has_mode_split(fit):
            ax.plot([], [], " ", label=f"{label}: no mode split in its cube")
            continue
        b = np.array([float(fit[f"{prefix}_exponent"]) for prefix, _ in MODE_READS])
        shift = x + 0.06 * (k - (len(fits) - 1) / 2)
        for suffix, lw in (("exponent_ci", 1.0), (names.EXPONENT_CI_SEEDS, 3.0)):  # thin: n points and seeds
            ci = np.array([fit[f"{prefix}_{suffix}"].values for prefix, _ in MODE_READS])  # [read, bound]
            ok = np.isfinite(ci).all(axis=1)
            ax.vlines(shift[ok], ci[ok, 0], ci[ok, 1], color=color, lw=lw, alpha=0.6 if lw > 1 else 1.0)
        ax.plot(shift, b, "o-", ms=5, lw=1, color=color,
                label=f"{label}: whole {b[0]:.2f}, bulk {b[1]:.2f}, outside {b[2]:.2f}")
    ax.axhline(float(first[f"{names.TAU_MEM_THEORY}_exponent"]), color="k", ls="--", lw=1,
               label=f"theory tau_mem: {float(first[f'{names.TAU_MEM_THEORY}_exponent']):.2f}")
    edged = [fit for _, fit in fits if f"{names.TAU_MEM_EDGE}_exponent" in fit]
    if edged:
        ax.axhline(float(edged[0][f"{names.TAU_MEM_EDGE}_exponent"]), color="k", ls=":", lw=1,
                   label="theory's formula at the runs' U edge")
    ax.set_xticks(x, [name for _, name in MODE_READS], fontsize=7)
    ax.set_xlim(-0.5, len(MODE_READS) - 0.5)
    ax.set_ylabel("half-gap exponent b, tau ~ psi_n^b")
    ax.set_title("(d) which modes of U the gap's exponent comes from\n(thin bar: 95% CI over n points and "
                 "seeds; thick: seeds only)", fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)


def _spectrum_panel(ax, label: str, cube: xr.Dataset, fit: xr.Dataset) -> None:
    d = int(fit.attrs.get("d", 1))
    psi_p = float(fit.attrs["psi_p"])
    t = float(fit.attrs["rf_time"])
    ns = cube[names.N].values
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, ns.size))
    lam_all = cube[names.U_EIGENVALUE].isel({names.SEED: 0})
    lo_x = max(float(lam_all.min()), 1e-6) / 2
    for color, n in zip(colors, ns):
        lam = np.sort(lam_all.sel({names.N: n}).values)
        lam = lam[np.isfinite(lam)]
        frac = np.arange(1, lam.size + 1) / lam.size
        psi_n = n / d
        ax.step(np.clip(lam, lo_x, None), frac, where="post", color=color, lw=1.2, label=f"psi_n = {psi_n:g} (seed 0)")
        if psi_n < psi_p:
            x = np.geomspace(lo_x, float(lam.max()), 800)
            ax.plot(x, theory_spectrum_cdf(x, psi_n, psi_p, t), color=color, ls="--", lw=0.9)
            ax.axvline(theory_bulk_edges(psi_n, psi_p, t)[0], color=color, ls=":", lw=0.8)
    s2 = rf_coefficients(t)["s_t2"]
    ax.axvline(s2, color="k", lw=0.8, ls="-.", label=f"s_t^2 = {s2:.3g} (the theory's atom)")
    ax.plot([], [], "k--", lw=0.9, label="theory (atom + Marchenko-Pastur)")
    ax.plot([], [], "k:", lw=0.8, label="theory's lam_min")
    ax.set_xscale("log")
    ax.set_xlabel("eigenvalue lambda of U")
    ax.set_ylabel("fraction of U's eigenvalues <= lambda")
    ax.set_title(f"(c) spectrum of U, {label}: d = {d}, p = {int(round(psi_p * d))}", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="upper left")


def make_rf_compare(fits: Sequence[tuple[str, xr.Dataset]], cubes: Sequence[xr.Dataset], path: str | Path, *,
                    title: str = "") -> Path:
    """Write rf_compare.png for the experiments `fits` (label, fit.nc) with their cubes; return the path."""
    if not fits:
        raise ValueError("rf_compare needs at least one experiment")
    colors = plt.get_cmap("tab10")(np.arange(len(fits)) % 10)
    spectral = [(label, cube, fit) for (label, fit), cube in zip(fits, cubes) if names.U_EIGENVALUE in cube]
    modes = any(_has_mode_split(fit) for _, fit in fits)
    count = 2 + bool(spectral) + modes
    if count == 4:
        fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
        axes = axes.ravel()
    else:
        fig, axes = plt.subplots(1, count, figsize=(5.4 * count, 4.6))
    _split_panel(axes[0], fits, colors)
    _level_panel(axes[1], fits, colors)
    if spectral:
        _spectrum_panel(axes[2], *spectral[0])
    if modes:
        _mode_panel(axes[-1], fits, colors)
    else:
        fig.text(0.5, 0.005, "no panel (d): these cubes predate the gap's split by modes of U (rerun rf_train to "
                 "draw it)", ha="center", va="bottom", fontsize=7, style="italic")
    first = fits[0][1]
    fig.suptitle(f"{title + ': ' if title else ''}random features, d = {first.attrs.get('d')}, psi_p = "
                 f"{first.attrs.get('psi_p', 0):g}, t = {first.attrs.get('rf_time', 0):g}", fontsize=10)
    fig.tight_layout(rect=(0, 0 if modes else 0.03, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    return path
