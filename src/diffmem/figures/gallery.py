"""Copy gallery of one (n, seed) run: generated samples beside their nearest training points.

Three checkpoints are chosen from the run's tau_gen and tau_mem (fit.nc): the last one before
tau_gen, the one inside the generalization window [tau_gen, tau_mem) nearest its geometric middle,
and the last checkpoint (after tau_mem when tau_mem is reached). A missing tau falls back to the
first / last checkpoint and the column header says so. The same samples (the first `num_pairs`
sample indices, i.e. the same initial noise) are shown at every checkpoint.

- Image data: each sample beside its nearest training image, framed red when memorized
  (d1/d2 below the score's ratio_threshold), with d1/d2 and d1 written under it; one panel per checkpoint.
- Flat data: a 2-D projection on the training set's first two principal components, training
  points and all samples of the checkpoint, memorized samples red and joined to their nearest point.

Drawn by `diffmem gallery` (`diffmem.stages.gallery`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from diffmem import names
from diffmem.figures.common import save_figure


def _steps(tau: float) -> str:
    return f"{tau:,.0f}" if tau >= 10 else f"{tau:.2g}"


def gallery_steps(steps, *, tau_gen: float, tau_mem: float) -> list[tuple[str, int]]:
    """(label, step) of the checkpoints to show: before tau_gen, inside the window, after tau_mem.

    NaN taus (not reached / not measured) fall back to the first and last checkpoint; a window with
    no checkpoint inside is left out. A single-checkpoint run (closed-form model) gives that one."""
    steps = np.unique(np.asarray(steps, dtype=np.int64))
    if steps.size == 1:
        return [("the only checkpoint", int(steps[0]))]
    positive = steps[steps > 0]
    picks: list[tuple[str, int]] = []
    earlier = positive[positive < tau_gen] if np.isfinite(tau_gen) else positive[:0]
    if earlier.size:
        picks.append((f"before tau_gen ({_steps(tau_gen)})", int(earlier[-1])))
    else:
        why = "no tau_gen" if not np.isfinite(tau_gen) else f"tau_gen {_steps(tau_gen)} is earlier"
        picks.append((f"first checkpoint ({why})", int(positive[0])))
    lo = tau_gen if np.isfinite(tau_gen) else float(positive[0])
    hi = tau_mem if np.isfinite(tau_mem) else float(positive[-1]) + 1
    inside = positive[(positive >= lo) & (positive < hi)]
    if inside.size:
        mid = np.sqrt(max(lo, 1.0) * hi)
        step = int(inside[np.argmin(np.abs(np.log(inside) - np.log(mid)))])
        missing = [name for name, tau in (("tau_gen", tau_gen), ("tau_mem", tau_mem)) if not np.isfinite(tau)]
        picks.append(("inside the window" + (f" (no {', '.join(missing)})" if missing else ""), step))
    last = int(positive[-1])
    if np.isfinite(tau_mem) and last >= tau_mem:
        picks.append((f"after tau_mem ({_steps(tau_mem)})", last))
    else:
        picks.append(("last checkpoint (tau_mem not reached)", last))
    seen, out = set(), []
    for label, step in picks:
        if step not in seen:
            seen.add(step)
            out.append((label, step))
    return out


def run_taus(fit: xr.Dataset, *, n: int, seed: int) -> tuple[float, float]:
    """(tau_gen, tau_mem) of one run; NaN where the fit has none."""
    def get(name: str) -> float:
        if name not in fit:
            return float("nan")
        da = fit[name]
        sel = {k: v for k, v in ((names.N, n), (names.SEED, seed)) if k in da.dims}
        try:
            return float(da.sel(sel))
        except (KeyError, TypeError, ValueError):
            return float("nan")
    return get(names.TAU_GEN), get(names.TAU_MEM)


def pca_2d(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], components [2, D]) of the training set's first two principal directions."""
    x = np.asarray(train, dtype=np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[:2]
    if comps.shape[0] < 2:  # one-dimensional data: pad with a zero direction
        comps = np.vstack([comps, np.zeros_like(comps[:1])])
    return mean, comps


def as_image(x: np.ndarray, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    img = (np.asarray(x, dtype=np.float64).reshape(shape) - lo) / max(hi - lo, 1e-12)
    img = np.clip(img, 0.0, 1.0)
    return img[0] if shape[0] == 1 else np.moveaxis(img, 0, -1)


def draw_image_gallery(columns: list[dict], *, train: np.ndarray, image_shape: tuple[int, ...], threshold: float,
                       title: str):
    """columns: dicts with label, step, f_mem, samples [K, D], nearest [K] (training-set rows), ratio [K], d1 [K].

    One panel per checkpoint: row i holds sample i (left) and its nearest training image (right), each tile an
    image of the panel (`ax.images[2 i]`, `[2 i + 1]`), framed red when memorized, with d1/d2 (ending " MEM" when
    memorized) and d1 written under it (`ax.texts`, in the same order). One axes per checkpoint, not per tile: a
    gallery of 8 pairs at 3 checkpoints was 48 axes, whose creation and drawing were ~90 % of the gallery job.
    """
    num = max(len(c["samples"]) for c in columns)
    lo, hi = float(np.min(train)), float(np.max(train))
    # one colormap object for every tile: a name would make each imshow copy it and rebuild its lookup table
    cmap = matplotlib.colormaps["gray"] if image_shape[0] == 1 else None
    gap, row, tile = 0.12, 1.4, 0.95  # between a row's two tiles and a row's height (tile and labels), in tiles; inches
    xlim, ylim = (-0.05, 2 + gap + 0.05), (num * row, -0.35)  # rows top down; room above the first for the titles
    panel_w, panel_h = tile * (xlim[1] - xlim[0]), tile * (ylim[0] - ylim[1])
    pad, head = 0.6, 0.85  # inches between panels, and above them for the column headers and the title
    width, height = len(columns) * (panel_w + pad), panel_h + head + 0.1
    fig = plt.figure(figsize=(width, height))
    for j, col in enumerate(columns):
        ax = fig.add_axes(((j * (panel_w + pad) + pad / 2) / width, 0.1 / height, panel_w / width, panel_h / height))
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.axis("off")
        ax.text(0.5, -0.08, "sample", ha="center", va="bottom", fontsize=7)
        ax.text(1.5 + gap, -0.08, "nearest train", ha="center", va="bottom", fontsize=7)
        for i in range(len(col["samples"])):
            mem = bool(col["ratio"][i] < threshold)
            color = "#d62728" if mem else "#7f7f7f"
            top = i * row
            for k, (x, label, label_color) in enumerate((
                    (col["samples"][i], f"d1/d2 {col['ratio'][i]:.2f}" + (" MEM" if mem else ""), color),
                    (train[col["nearest"][i]], f"d1 {col['d1'][i]:.2f}", "black"))):
                left = k * (1 + gap)
                ax.imshow(as_image(x, image_shape, lo, hi), cmap=cmap, vmin=0, vmax=1, interpolation="nearest",
                          extent=(left, left + 1, top + 1, top), aspect="auto")
                # add_artist, not add_patch: the limits are set, so the data limits add_patch would grow go unused
                ax.add_artist(plt.Rectangle((left, top), 1, 1, fill=False, edgecolor=color, lw=3 if mem else 1))
                ax.text(left + 0.5, top + 1.04, label, ha="center", va="top", fontsize=7, color=label_color)
        fig.text((j * (panel_w + pad) + pad / 2 + panel_w / 2) / width, 1.0 - 0.35 / height,
                 f"step {col['step']}\n{col['label']}\nf_mem = {col['f_mem']:.2f}", ha="center", va="top",
                 fontsize=8)
    fig.suptitle(title, fontsize=9, y=1.0 - 0.05 / height, va="top")
    return fig


def draw_projection_gallery(columns: list[dict], *, train: np.ndarray, threshold: float, title: str):
    """columns: dicts with label, step, f_mem, samples [M, D], nearest [M], ratio [M] (all samples)."""
    mean, comps = pca_2d(train)
    project = lambda x: (np.asarray(x, dtype=np.float64) - mean) @ comps.T  # noqa: E731  [., 2]
    t2 = project(train)
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3.8), squeeze=False)
    for ax, col in zip(axes[0], columns):
        s2 = project(col["samples"])
        mem = col["ratio"] < threshold
        ax.scatter(s2[~mem, 0], s2[~mem, 1], s=6, color="#1f77b4", alpha=0.5, label="sample")
        ax.scatter(s2[mem, 0], s2[mem, 1], s=8, color="#d62728", alpha=0.8, label="memorized sample")
        for k in np.flatnonzero(mem):
            a, b = s2[k], t2[col["nearest"][k]]
            ax.plot([a[0], b[0]], [a[1], b[1]], color="#d62728", lw=0.5, alpha=0.6)
        ax.scatter(t2[:, 0], t2[:, 1], s=22, marker="x", color="black", lw=1, label="training point")
        ax.set_title(f"step {col['step']}: {col['label']}\nf_mem = {col['f_mem']:.2f}", fontsize=8)
        ax.set_xlabel("PC 1 of the training set")
        ax.set_ylabel("PC 2")
    axes[0, 0].legend(fontsize=6, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def gallery_columns(scores: xr.Dataset, manifest: dict, chosen: list[tuple[str, int]], *, position: dict[int, int],
                    num_pairs: int | None) -> list[dict]:
    """The data of each column: samples at the step, their nearest training rows, d1/d2, d1 and f_mem."""
    columns = []
    for label, step in chosen:
        at = scores.sel({names.STEP: step})
        keep = slice(None) if num_pairs is None else slice(0, num_pairs)
        samples = np.load(manifest["files"][str(step)])[keep]
        pool_idx = at[names.NEAREST].values[keep]
        columns.append({
            "label": label, "step": step, "f_mem": float(at[names.F_MEM]),
            "samples": samples, "nearest": np.array([position[int(p)] for p in pool_idx]),
            "ratio": at[names.RATIO].values[keep], "d1": at[names.D1].values[keep],
        })
    return columns


def make_gallery(*, manifest: dict, scores: xr.Dataset, train: np.ndarray, pool_index: np.ndarray,
                 image_shape: tuple[int, ...] | None, fit: xr.Dataset | None, out: str | Path,
                 num_pairs: int = 8, title: str = "") -> list[tuple[str, int]]:
    """Draw and save one run's gallery; returns the (label, step) checkpoints shown."""

    n, seed = int(manifest["n"]), int(manifest["seed"])
    tau_gen, tau_mem = run_taus(fit, n=n, seed=seed) if fit is not None else (np.nan, np.nan)
    chosen = gallery_steps(scores[names.STEP].values, tau_gen=tau_gen, tau_mem=tau_mem)
    position = {int(p): i for i, p in enumerate(pool_index)}
    threshold = float(scores[names.F_MEM].attrs[names.RATIO_THRESHOLD])  # the score stage writes it
    head = f"{title}  n={n} seed={seed}  (memorized: d1/d2 < {threshold:.2f})"
    if image_shape is not None:
        columns = gallery_columns(scores, manifest, chosen, position=position, num_pairs=num_pairs)
        fig = draw_image_gallery(columns, train=train, image_shape=image_shape, threshold=threshold, title=head)
    else:
        columns = gallery_columns(scores, manifest, chosen, position=position, num_pairs=None)
        fig = draw_projection_gallery(columns, train=train, threshold=threshold, title=head)
    save_figure(fig, out)
    return chosen

