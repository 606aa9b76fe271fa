"""What every figure shares: the atomic write and plain log-axis ticks."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.layout_engine import PlaceHolderLayoutEngine
from matplotlib.mathtext import MathTextParser
from matplotlib.transforms import Bbox

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
DPI = 120


class SharedMathtextCanvas(FigureCanvasAgg):
    """The Agg canvas, its renderers sharing one mathtext parser. Each new renderer (one per figure size and
    dpi: `tight_bbox`'s and the cropped PNG's) brings a parser of its own, and the parser caches its layouts
    per instance: every log-axis label ("10^3") was parsed again by each (~10 ms a label, ~1 CPU-second of
    the default run's plot job). The layout of a given text, dpi and font is the same whichever parser made it."""

    def get_renderer(self):
        renderer = super().get_renderer()
        renderer.mathtext_parser = MATHTEXT_PARSER
        return renderer


MATHTEXT_PARSER = MathTextParser("path")  # what matplotlib's RendererAgg makes for itself


def tight_bbox(fig, *, dpi: float = DPI) -> Bbox:
    """The box (inches) that `savefig(..., dpi=dpi, bbox_inches="tight")` crops `fig` to, padded as it pads.

    savefig("tight") first draws the whole figure with rendering switched off to place its artists, then
    asks for this box, then draws again for real: the first draw (every tick, label and image laid out
    and resampled) was about half of a figure's cost. Handing savefig the box itself skips that draw;
    the box is the same, since `get_tightbbox` places what it measures (ticks, titles, legends) itself,
    so the pixels are too (tests/test_figures.py)."""
    original = fig.dpi
    fig.dpi = dpi  # text extents depend on the dpi (hinting at the pixel size)
    try:
        box = fig.get_tightbbox(fig.canvas.get_renderer())
    finally:
        fig.dpi = original
    return box.padded(matplotlib.rcParams["savefig.pad_inches"])


def save_figure(fig, path: str | Path) -> None:
    """Write `fig` to `path` (its folder created if missing) through a temporary file, and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    if isinstance(fig.get_layout_engine(), PlaceHolderLayoutEngine):
        # left by tight_layout(), whose layout is done: savefig would draw the figure once more for it
        fig.set_layout_engine(None)
    SharedMathtextCanvas(fig)  # becomes the figure's canvas
    fig.savefig(tmp, dpi=DPI, bbox_inches=tight_bbox(fig), pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    plt.close(fig)
    os.replace(tmp, path)
