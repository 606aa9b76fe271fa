"""What every figure shares: the atomic write and plain log-axis ticks."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from diffmem import names


def ci_label(lo: float, hi: float, *, seeds: int | None = None) -> str:
    """A legend's "[lo, hi]" for a confidence interval: "(no CI: one seed)" where it is undefined (never
    "[nan, nan]"), and flagged where it is a bootstrap over two seeds (three distinct resamples)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "(no CI: one seed)" if seeds == 1 else "(no CI)"
    text = f"[{lo:.2f}, {hi:.2f}]"
    return text + " (2 seeds)" if seeds == 2 else text


def seed_count(ds) -> int | None:
    """How many seeds a fit or cube holds (its seed dimension), or None without one."""
    return int(ds.sizes[names.SEED]) if names.SEED in ds.dims else None


def f_mem_label(f_mem) -> str:
    """'f_mem  (d1/d2 < 0.33)': the axis label of f_mem with the threshold the score stage used."""
    threshold = f_mem.attrs.get(names.RATIO_THRESHOLD)
    return "f_mem" if threshold is None else f"f_mem  (d1/d2 < {float(threshold):.2f})"


def plain_log_ticks(axis, values=None) -> None:
    """Label a log axis with plain numbers (32, 64, ...) instead of 3x10^1."""
    formatter = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    if values is not None:  # else keep the axis's locator
        axis.set_major_locator(matplotlib.ticker.FixedLocator(sorted(values)))
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


# zlib level of the PNGs: 1 encodes the default run's 23 figures in ~0.6 CPU-seconds against ~1.0 at PIL's
# default 6, for ~10 % larger files; the pixels are the same (tests/test_figures.py)
PNG_COMPRESS_LEVEL = 1


def save_figure(fig, path: str | Path) -> None:
    """Write `fig` to `path` (its folder created if missing) through a temporary file, and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight", pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    plt.close(fig)
    os.replace(tmp, path)
