"""twin.png: the twin-model test of Kadkhodaie et al. (ICLR 2024), from the cube (`diffmem twin-figure`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import xarray as xr

from diffmem import names
from diffmem.figures.common import plain_log_ticks, save_figure


def make_twin_figure(cube: xr.Dataset, out: str | Path, *, title: str = "") -> Path:
    """twin.png: the fraction of twin pairs closer to each other than to their training sets against
    step per n, and against n at three checkpoints; and the median pair distance over the median d1."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
    ns = cube[names.N].values
    palette = sns.color_palette("viridis", n_colors=len(ns))
    frac = cube[names.TWIN_CLOSER]
    df = frac.to_dataframe().reset_index().dropna(subset=[names.TWIN_CLOSER])
    df = df[df[names.STEP] > 0]
    sns.lineplot(data=df, x=names.STEP, y=names.TWIN_CLOSER, hue=names.N, palette=palette, errorbar="se",
                 marker="o", markersize=3, ax=axes[0], legend="full")
    axes[0].set_xscale("log")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("pairs closer to each other\nthan to their training sets")
    axes[0].set_xlabel("training step")
    steps = cube[names.STEP].values[cube[names.STEP].values > 0]
    picks = sorted({int(steps[0]), int(steps[len(steps) // 2]), int(steps[-1])}) if steps.size else []
    for color, step in zip(sns.color_palette("rocket", n_colors=max(len(picks), 1)), picks):
        at = frac.sel({names.STEP: step})
        mean, se = at.mean(names.SEED), at.std(names.SEED) / np.sqrt(at.notnull().sum(names.SEED))
        axes[1].errorbar(ns, mean.values, yerr=np.nan_to_num(se.values), marker="o", color=color, capsize=2,
                         label=f"step {step}")
    axes[1].set_xscale("log")
    plain_log_ticks(axes[1].xaxis, ns)
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_xlabel("training-set size n (each model)")
    axes[1].set_ylabel("pairs closer to each other\nthan to their training sets")
    axes[1].legend(fontsize=7)
    if names.D1 in cube:
        ratio = (cube[names.TWIN_DISTANCE].median(names.SAMPLE) / cube[names.D1].median(names.SAMPLE))
        rdf = ratio.rename("r").to_dataframe().reset_index().dropna(subset=["r"])
        rdf = rdf[rdf[names.STEP] > 0]
        sns.lineplot(data=rdf, x=names.STEP, y="r", hue=names.N, palette=palette, errorbar="se", marker="o",
                     markersize=3, ax=axes[2], legend=False)
        axes[2].axhline(1.0, color="0.5", lw=0.8, ls="--")
        axes[2].set_xscale("log")
        axes[2].set_yscale("log")
        axes[2].set_xlabel("training step")
        axes[2].set_ylabel("median d_AB / median d1")
        axes[2].set_title("distance between twins over distance to nearest training point", fontsize=8)
    else:
        axes[2].axis("off")
    fig.suptitle(f"{title}  twin models on disjoint training sets, same initial noise "
                 "(Kadkhodaie et al. 2024)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)
    return Path(out)
