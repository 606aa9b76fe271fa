"""What every figure shares: the atomic write and plain log-axis ticks."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker

from diffmem import names


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


def save_figure(fig, path: str | Path) -> None:
    """Write `fig` to `path` (its folder created if missing) through a temporary file, and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
