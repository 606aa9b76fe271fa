"""Combine the sub-experiments of a sweep into one cube with the swept key as an extra dimension.

An experiment whose `model.width` (family network) or `model.strength` (family empirical) is a list
runs one sub-experiment per value under `results/<experiment>/<key><value>/`, each through the normal
pipeline. This stage concatenates their cubes and fits along a new dimension `width` or `strength`
(with the parameter count `n_params` as a coordinate on `width`) and draws the sweep figure:

- `sweep_width.png`: final f_mem against n per width, and n_star (the largest n that still memorizes
  by the end of training) against the parameter count: the model-dependent threshold of arXiv
  2505.17638 beyond which memorization does not appear at any training time reached.
  With onset times (a trained network), a third panel shows tau_mem * W against n for every width:
  arXiv 2505.17638 finds tau_mem proportional to n / W, so the widths collapse onto one line;
  `width_collapse` fits that line over all widths and seeds with the fit diagnostics (scaling.py),
  stored in fit.nc as `tau_mem_times_width_*`.
- `sweep_strength.png`: f_mem against the regularization strength per n, and the quality metric beside
  it when the experiment computes one (Baptista et al., arXiv 2501.15785, read f_mem against strength).

Run: `diffmem sweep --key width --values 16 32 --cubes a/cube.nc b/cube.nc --fits a/fit.nc b/fit.nc
--model '<json>' --dataset data/dataset.npz --out-cube cube.nc --out-fit fit.nc --outdir figures/`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from diffmem import names
from diffmem.cube import load_parts
from diffmem.fit import pick_quality_metric
from diffmem.io import atomic_to_netcdf, cf_global_attrs

SWEEP_FIGURE = {names.WIDTH: "sweep_width.png", names.STRENGTH: "sweep_strength.png"}


def parameter_counts(model: dict, widths: list[int], *, data_shape: tuple[int, ...]) -> list[int]:
    """Trainable parameters of the network at each width (the rest of the model config fixed)."""
    from diffmem.config import ModelConfig
    from diffmem.models import build_denoiser, count_parameters

    return [count_parameters(build_denoiser(ModelConfig.from_dict({**model, names.WIDTH: int(w)}),
                                            data_shape=data_shape)) for w in widths]


def combine_sweep(parts: list[xr.Dataset], *, key: str, values: list[float], attrs: dict | None = None,
                  n_params: list[int] | None = None) -> xr.Dataset:
    """Concatenate per-value datasets along a new dimension `key` (outer join on every other axis)."""
    order = np.argsort(values)
    coord = pd.Index(np.asarray(values)[order], name=key)
    out = xr.concat([parts[i] for i in order], dim=coord, join="outer", combine_attrs="drop_conflicts",
                    coords="minimal", compat="override")
    if n_params is not None:
        out = out.assign_coords({names.N_PARAMS: (key, np.asarray(n_params, dtype=np.int64)[order])})
    if attrs:
        out.attrs.update(attrs)
    out.attrs["sweep"] = key
    return names.annotate(out)


COLLAPSE = names.TAU_MEM_TIMES_WIDTH


def width_collapse(fit: xr.Dataset, *, num_bootstrap: int = 1000, ci_level: float = 0.95, alpha: float = 0.05,
                   rng: np.random.Generator | None = None) -> dict[str, xr.DataArray]:
    """tau_mem * W (n, width, seed) and the power law fitted to it over every width and seed at once.

    Each (width, seed) is one column of the table the diagnostics see: the lack-of-fit test asks whether
    the per-n means bend away from a power law. Whether the widths collapse (tau_mem proportional to
    1/W) is a separate F test (scaling.collapse_test) of one intercept per width against a common one;
    the flag needs both."""
    from diffmem.scaling import collapse_test, diagnose

    scaled = (fit[names.TAU_MEM] * fit[names.WIDTH]).transpose(names.N, names.WIDTH, names.SEED)
    table = scaled.values.reshape(scaled.sizes[names.N], -1)  # [N, W * S]
    out = diagnose(scaled[names.N].values, table, num_bootstrap=num_bootstrap, ci_level=ci_level, alpha=alpha,
                   rng=rng or np.random.default_rng(0))
    collapse_p = collapse_test(scaled[names.N].values, scaled.transpose(names.WIDTH, names.N, names.SEED).values)
    return {
        COLLAPSE: scaled,
        f"{COLLAPSE}_exponent": xr.DataArray(out["exponent"]),
        f"{COLLAPSE}_prefactor": xr.DataArray(out["prefactor"]),
        f"{COLLAPSE}_exponent_ci": xr.DataArray(out["exponent_ci"], dims=(names.CI_BOUND,)),
        f"{COLLAPSE}_{names.LOF_PVALUE}": xr.DataArray(out["lof_p_value"]),
        f"{COLLAPSE}_collapse_pvalue": xr.DataArray(collapse_p),
        f"{COLLAPSE}_{names.POWER_LAW_OK}": xr.DataArray(bool(out["power_law_ok"] and collapse_p >= alpha)),
    }


def plot_width_collapse(ax, fit: xr.Dataset, colors) -> None:
    """tau_mem * W against n per width (geometric mean over seeds, bars: seed range) and the joint fit."""
    scaled = fit[COLLAPSE]
    n = scaled[names.N].values
    for color, w in zip(colors, scaled[names.WIDTH].values):
        v = scaled.sel({names.WIDTH: w}).values  # [N, S]
        with np.errstate(all="ignore"):
            geo = np.exp(np.nanmean(np.log(v), axis=1))
            lo, hi = np.nanmin(v, axis=1), np.nanmax(v, axis=1)
        ax.errorbar(n, geo, yerr=np.clip(np.nan_to_num(np.stack([geo - lo, hi - geo])), 0, None), marker="o", color=color,
                    capsize=2, label=f"width {w:g}")
    b, a = float(fit[f"{COLLAPSE}_exponent"]), float(fit[f"{COLLAPSE}_prefactor"])
    if np.isfinite(b):
        lo, hi = fit[f"{COLLAPSE}_exponent_ci"].values
        p_value = float(fit[f"{COLLAPSE}_{names.LOF_PVALUE}"])
        grid = np.geomspace(n.min() / 1.2, n.max() * 1.2, 40)
        collapse_p = float(fit[f"{COLLAPSE}_collapse_pvalue"])
        ax.plot(grid, a * grid**b, "k--", label=f"all widths: b = {b:.2f} [{lo:.2f}, {hi:.2f}]\n"
                                               f"lack-of-fit p = {p_value:.2g}, widths differ p = {collapse_p:.2g}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("training-set size n")
    ax.set_ylabel("tau_mem x width (steps)")
    ax.legend(fontsize=7)


def make_sweep_figure(cube: xr.Dataset, fit: xr.Dataset, outdir: str | Path, *, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    import seaborn as sns

    from diffmem.plots import _save

    key = cube.attrs.get("sweep") or (names.WIDTH if names.WIDTH in cube.dims else names.STRENGTH)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid", context="paper")
    threshold = float(fit.attrs.get("tau_mem_threshold", 0.1))
    values = cube[key].values
    colors = sns.color_palette("viridis", n_colors=len(values))
    if key == names.WIDTH:
        collapse = COLLAPSE in fit and bool(np.isfinite(fit[COLLAPSE].values).any())  # else nothing to log-scale
        fig, axes = plt.subplots(1, 3 if collapse else 2, figsize=(15 if collapse else 10, 3.8))
        ax, ax2 = axes[0], axes[1]
        if collapse:
            plot_width_collapse(axes[2], fit, colors)
        n = fit[names.N].values
        for color, w in zip(colors, values):
            f = fit[names.F_MEM_FINAL].sel({key: w}).values
            se = fit[names.F_MEM_FINAL_SE].sel({key: w}).values
            label = f"width {w:g} ({int(cube[names.N_PARAMS].sel({key: w})):,} params)"
            ax.errorbar(n, f, yerr=np.nan_to_num(se), marker="o", color=color, label=label, capsize=2)
        ax.axhline(threshold, color="k", lw=0.8, ls=":", label=f"threshold {threshold:g}")
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("training-set size n")
        ax.set_ylabel("f_mem at the last checkpoint")
        ax.legend(fontsize=7)
        params = cube[names.N_PARAMS].values
        n_star = fit[names.N_STAR].values
        top = float(np.max(n))
        ok = np.isfinite(n_star)
        ax2.plot(params[ok], n_star[ok], marker="o", color="C3", label="n* (largest n memorizing at the end)")
        capped = ok & (n_star >= top)
        if capped.any():
            ax2.scatter(params[capped], n_star[capped], marker="^", s=80, facecolors="none", edgecolors="k",
                        label="n* = largest n tried (a lower bound)", zorder=3)
        if (~ok).any():
            ax2.scatter(params[~ok], np.full((~ok).sum(), float(np.min(n)) / 2), marker="v", color="grey",
                        label="no n memorizes", zorder=3)
        ax2.set_xscale("log")
        # one labelled tick per network: a log axis spanning less than a decade labels its minor
        # ticks too, and they overlap
        ax2.set_xticks(params, [f"{p / 1000:.3g}k" if p >= 1000 else f"{p:g}" for p in params])
        ax2.xaxis.set_minor_formatter(NullFormatter())
        ax2.set_yscale("log", base=2)
        ax2.set_xlabel("number of parameters")
        ax2.set_ylabel("n*")
        ax2.legend(fontsize=7)
    else:
        metric = pick_quality_metric(cube, "auto")
        fig, axes = plt.subplots(1, 2 if metric else 1, figsize=(10 if metric else 5, 3.8), squeeze=False)
        ax = axes[0, 0]
        pos = values[values > 0]
        lin = float(pos.min()) if pos.size else 1.0
        last = cube[names.F_MEM].isel({names.STEP: -1})
        ncolors = sns.color_palette("viridis", n_colors=cube.sizes[names.N])
        for color, n in zip(ncolors, cube[names.N].values):
            f = last.sel({names.N: n})
            ax.errorbar(values, f.mean(names.SEED).values, yerr=np.nan_to_num(f.std(names.SEED).values),
                        marker="o", color=color, label=f"n = {n}", capsize=2)
        ax.set_xscale("symlog", linthresh=lin)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"regularization strength ({cube.attrs.get('regularization', '')})")
        ax.set_ylabel("f_mem")
        ax.legend(fontsize=7)
        if metric:
            ax2 = axes[0, 1]
            q = cube[metric].isel({names.STEP: -1})
            for color, n in zip(ncolors, cube[names.N].values):
                ax2.plot(values, q.sel({names.N: n}).mean(names.SEED).values, marker="o", color=color, label=f"n = {n}")
            ax2.set_xscale("symlog", linthresh=lin)
            ax2.set_xlabel("regularization strength")
            ax2.set_ylabel(f"{metric} (last step, mean over seeds)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = outdir / SWEEP_FIGURE[key]
    _save(fig, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="diffmem sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--key", required=True, choices=[names.WIDTH, names.STRENGTH])
    parser.add_argument("--values", nargs="+", type=float, required=True)
    parser.add_argument("--cubes", nargs="+", required=True, help="one cube.nc per value, in --values order")
    parser.add_argument("--fits", nargs="+", required=True, help="one fit.nc per value, in --values order")
    parser.add_argument("--model", default=None, help="model config slice (for parameter counts of a width sweep)")
    parser.add_argument("--dataset", default=None, help="dataset .npz (its per-sample shape, for parameter counts)")
    parser.add_argument("--experiment", default="")
    parser.add_argument("--out-cube", required=True)
    parser.add_argument("--out-fit", required=True)
    parser.add_argument("--outdir", required=True, help="folder of the sweep figure")
    args = parser.parse_args(argv)
    from diffmem.io import fail

    if not len(args.values) == len(args.cubes) == len(args.fits):
        fail("diffmem sweep: --values, --cubes and --fits must have the same length")
    from diffmem.config import read_json_arg

    values = [int(v) if args.key == names.WIDTH else v for v in args.values]
    model = read_json_arg(args.model) if args.model else {}
    n_params = None
    if args.key == names.WIDTH:
        from diffmem.data import load_dataset

        if not model or args.dataset is None:
            fail("diffmem sweep: a width sweep needs --model and --dataset (for the parameter counts)")
        ds = load_dataset(args.dataset)
        shape = tuple(ds.image_shape) if ds.image_shape else (int(ds.pool.shape[1]),)
        n_params = parameter_counts(model, values, data_shape=shape)

    attrs = {"experiment": args.experiment}
    cube = combine_sweep(load_parts(args.cubes), key=args.key, values=values, attrs=attrs, n_params=n_params)
    fit = combine_sweep(load_parts(args.fits), key=args.key, values=values, attrs=attrs, n_params=n_params)
    if args.key == names.WIDTH and names.TAU_MEM in fit:
        fit = names.annotate(fit.assign(width_collapse(fit)))
    if model:
        cube.attrs["regularization"] = model.get("regularization", "")
    # the parts' agreeing CF attrs survive the concat; title, history and date are the sweep's own
    for ds, what in ((cube, "cube"), (fit, "fit")):
        ds.attrs.update(cf_global_attrs(
            title=f"diffmem {what} of experiment {args.experiment}, swept over {args.key}",
            summary=ds.attrs.get("summary", f"diffmem {what} over {args.key}"),
            command=f"diffmem sweep --key {args.key} ({len(values)} sub-experiments)"))
    atomic_to_netcdf(cube, args.out_cube)
    atomic_to_netcdf(fit, args.out_fit)
    path = make_sweep_figure(cube, fit, args.outdir, title=args.experiment)
    summary = ", ".join(f"{args.key} {v:g}: n* = {float(s):g}" for v, s in zip(fit[args.key].values, fit[names.N_STAR].values))
    print(f"[sweep] {dict(cube.sizes)}; {summary} -> {args.out_cube}, {path}")
    if COLLAPSE in fit:
        per_width = ", ".join(f"width {w:g}: b = {float(b):.2f}" for w, b in
                              zip(fit[names.WIDTH].values, fit[names.TAU_MEM_EXPONENT].values))
        lo, hi = fit[f"{COLLAPSE}_exponent_ci"].values
        print(f"[sweep] tau_mem per width: {per_width}; tau_mem * W over all widths ~ n^"
              f"{float(fit[f'{COLLAPSE}_exponent']):.2f} [{lo:.2f}, {hi:.2f}], lack-of-fit p = "
              f"{float(fit[f'{COLLAPSE}_{names.LOF_PVALUE}']):.3g}, widths differ (no collapse) p = "
              f"{float(fit[f'{COLLAPSE}_collapse_pvalue']):.3g}")


if __name__ == "__main__":
    main(sys.argv[1:])
