"""Figure of memorization per training example, from the cube's train_index variables.

`copies.png`:
- top: the most-copied training points (images for image data, else a bar chart of their copy
  counts) at the last checkpoint of the largest n in which any point is copied, over all seeds;
- bottom left: the distribution of copy counts, per n (fraction of training points copied at
  least k times, k = 1, 2, ...);
- bottom middle / right: the first step at which each training point is copied against its distance
  to its nearest other training point and to the training-set mean (never-copied points on the top
  line), with Spearman's rank correlation per n (never ranks last). Negative: isolated points
  (outliers) are copied first; positive: crowded points and near-duplicates are copied first.

Drawn by `diffmem copies-figure` (`diffmem.stages.copies_figure`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import xarray as xr

from diffmem import names
from diffmem.copies import isolation_correlations
from diffmem.figures.common import save_figure
from diffmem.figures.gallery import as_image

VARIABLES = (names.COPY_COUNT, names.FIRST_COPY_STEP, names.TRAIN_NN_DISTANCE, names.TRAIN_MEAN_DISTANCE,
             names.TRAIN_POOL_INDEX)


def correlations(cube: xr.Dataset) -> dict[int, dict[str, float]]:
    """Per n: Spearman correlation of first-copy step with each isolation measure, all seeds pooled
    (ranks within each seed's set are comparable: same n, same data)."""
    out = {}
    for n in cube[names.N].values:
        at = cube.sel({names.N: n})
        valid = at[names.COPY_COUNT].notnull().values
        first = at[names.FIRST_COPY_STEP].values[valid]
        out[int(n)] = isolation_correlations(first, at[names.TRAIN_NN_DISTANCE].values[valid],
                                             at[names.TRAIN_MEAN_DISTANCE].values[valid])
        out[int(n)]["copied"] = float(np.isfinite(first).mean()) if first.size else float("nan")
    return out


def most_copied(cube: xr.Dataset, *, top: int) -> tuple[int | None, list[dict]]:
    """(n, rows) of the `top` most-copied points at the largest n with any copy; rows: seed, train_index,
    count, first step, pool index."""
    counts = cube[names.COPY_COUNT]
    any_copy = (counts.fillna(0) > 0).any((names.SEED, names.TRAIN_INDEX))
    ns = cube[names.N].values[any_copy.values]
    if ns.size == 0:
        return None, []
    n = int(ns.max())
    at = cube.sel({names.N: n})
    rows = []
    for s_i, seed in enumerate(at[names.SEED].values):
        c = at[names.COPY_COUNT].values[s_i]
        for t in np.flatnonzero(np.nan_to_num(c) > 0):
            rows.append({"seed": int(seed), "train_index": int(t), "count": int(c[t]),
                         "first": float(at[names.FIRST_COPY_STEP].values[s_i, t]),
                         "pool": int(at[names.TRAIN_POOL_INDEX].values[s_i, t])})
    rows.sort(key=lambda r: (-r["count"], r["first"], r["seed"], r["train_index"]))
    return n, rows[:top]


def make_copies_figure(cube: xr.Dataset, *, train_sets: dict[tuple[int, int], np.ndarray],
                       image_shape: tuple[int, ...] | None, out: str | Path, title: str = "", top: int = 12):

    sns.set_theme(style="whitegrid", context="paper")
    n_top, rows = most_copied(cube, top=top)
    corr = correlations(cube)
    ns = [int(n) for n in cube[names.N].values]
    palette = dict(zip(ns, sns.color_palette("viridis", n_colors=len(ns))))
    fig = plt.figure(figsize=(13, 6.4))
    grid = fig.add_gridspec(2, 1, height_ratios=[0.55, 1.5], hspace=0.3)
    top_grid = grid[0].subgridspec(1, max(top, 1), wspace=0.1)
    if n_top is None:
        ax = fig.add_subplot(grid[0])
        ax.axis("off")
        ax.text(0.5, 0.5, "no training point is copied at the last checkpoint of any run", ha="center", fontsize=10)
    elif image_shape is not None:
        all_x = np.concatenate(list(train_sets.values()))
        lo, hi = float(all_x.min()), float(all_x.max())
        for k, row in enumerate(rows):
            ax = fig.add_subplot(top_grid[0, k])
            x = train_sets[(n_top, row["seed"])][row["train_index"]]
            ax.imshow(as_image(x, image_shape, lo, hi), cmap="gray" if image_shape[0] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{row['count']}x", fontsize=8)
            ax.set_xlabel(f"seed {row['seed']}\nfrom {row['first']:.0f}", fontsize=6)
        fig.text(0.5, 0.985, f"most-copied training points at n = {n_top} (copies at the last checkpoint; "
                 "seed; first step copied)", ha="center", va="top", fontsize=9)
    else:
        ax = fig.add_subplot(grid[0])
        labels = [f"s{r['seed']}:#{r['pool']}" for r in rows]
        ax.bar(range(len(rows)), [r["count"] for r in rows], color=palette[n_top])
        ax.set_xticks(range(len(rows)), labels, rotation=45, fontsize=7)
        ax.set_ylabel("copies at last checkpoint")
        ax.set_title(f"most-copied training points at n = {n_top} (seed:#pool index)", fontsize=9)
    bottom = grid[1].subgridspec(1, 3, wspace=0.3)
    ax = fig.add_subplot(bottom[0, 0])
    copied = False  # any point copied at any n: else every curve is 0 and there is no log axis to draw
    for n in ns:
        c = cube[names.COPY_COUNT].sel({names.N: n}).values.ravel()
        c = c[np.isfinite(c)].astype(int)
        if c.size == 0:
            continue
        copied |= bool(c.max() > 0)
        k = np.arange(1, max(int(c.max()), 1) + 1)
        ax.plot(k, [(c >= v).mean() for v in k], marker="o", markersize=3, color=palette[n],
                label=f"n={n}: {(c > 0).mean():.0%} copied, max {int(c.max())}")
    ax.set_xscale("log")
    ax.set_xlim(left=0.8)
    ax.set_xlabel("copy count k (memorized samples, last checkpoint)")
    ax.set_ylabel("fraction of training points copied >= k times")
    if copied:
        ax.set_yscale("log")
    ax.legend(fontsize=6)
    ax.set_title("distribution of copy counts", fontsize=9)
    max_step = float(np.nanmax(cube[names.FIRST_COPY_STEP].values)) if np.isfinite(
        cube[names.FIRST_COPY_STEP].values).any() else 1.0
    never_y = max(max_step, 1.0) * 3
    for j, (var, xlabel) in enumerate([(names.TRAIN_NN_DISTANCE, "distance to nearest other training point"),
                                       (names.TRAIN_MEAN_DISTANCE, "distance to training-set mean")]):
        ax = fig.add_subplot(bottom[0, j + 1])
        for n in ns:
            at = cube.sel({names.N: n})
            x, y = at[var].values.ravel(), at[names.FIRST_COPY_STEP].values.ravel()
            ok = np.isfinite(x)
            copied = ok & np.isfinite(y)
            never = ok & ~np.isfinite(y)
            rho = corr[n][var]
            ax.scatter(x[copied], np.maximum(y[copied], 1), s=10, color=palette[n], label=f"n={n}: rho {rho:+.2f}")
            ax.scatter(x[never], np.full(never.sum(), never_y), s=6, marker="|", color=palette[n], alpha=0.4)
        ax.axhline(never_y / 1.7, color="0.6", lw=0.6, ls=":")
        ax.set_yscale("log")
        ax.text(0.01, 0.99, "top line: never copied", transform=ax.transAxes, fontsize=6, va="top")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("first step copied")
        ax.legend(fontsize=6, loc="lower right", title="Spearman (never = last)", title_fontsize=6)
    fig.suptitle(title, fontsize=10, y=1.03)
    save_figure(fig, out)
    return n_top, rows, corr

