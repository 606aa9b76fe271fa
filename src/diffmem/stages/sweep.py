"""Combine the sub-experiments of a sweep into one cube with the swept key as an extra dimension.

An experiment whose `model.width` (family network), `model.strength` (family empirical) or
`train.tikhonov` (family network) is a list runs one sub-experiment per value under `results/<experiment>/<key><value>/`, each through the normal
pipeline. This stage concatenates their cubes and fits along a new dimension `width`, `strength` or `tikhonov`
(with the parameter count `n_params` as a coordinate on `width`) and draws the sweep figure:

- `sweep_width.png`: final f_mem against n per width, and n_star (the largest n that still memorizes
  by the end of training) against the parameter count: the model-dependent threshold of arXiv
  2505.17638 beyond which memorization does not appear at any training time reached.
  With onset times (a trained network), a third panel shows tau_mem * W against n for every width:
  arXiv 2505.17638 finds tau_mem proportional to n / W, so the widths collapse onto one line;
  `width_collapse` fits that line over all widths and seeds with the fit diagnostics (scaling.py),
  stored in fit.nc as `tau_mem_times_width_*`.
- `sweep_strength.png` / `sweep_tikhonov.png`: f_mem against the regularization strength (closed form)
  or the training loss's Tikhonov penalty per n, and beside it the FD in each feature space the
  experiment computes, with the held-out and training-set FDs of `quality.baselines` as reference lines
  (Baptista et al., arXiv 2501.15785, read f_mem against strength; the FD says whether what replaces
  the copies is data-like: figures/sweep.plot_strength_sweep).

Run: `diffmem sweep --key width --values 16 32 --cubes a/cube.nc b/cube.nc --fits a/fit.nc b/fit.nc
--model '<json>' --dataset data/dataset.npz --out-cube cube.nc --out-fit fit.nc --outdir figures/`
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pandas as pd
import xarray as xr

from diffmem import names
from diffmem.config import ModelConfig, read_json_arg
from diffmem.cube import load_parts
from diffmem.data import load_dataset
from diffmem.figures.sweep import make_sweep_figure
from diffmem.fitfile import read_fit, write_fit
from diffmem.io import atomic_to_netcdf, cf_global_attrs, fail
from diffmem.log import configure
from diffmem.models import build_denoiser, count_parameters
from diffmem.scaling import collapse_test, diagnose
from diffmem.stages import stage_parser

log = logging.getLogger(__name__)


def parameter_counts(model: dict, widths: list[int], *, data_shape: tuple[int, ...]) -> list[int]:
    """Trainable parameters of the network at each width (the rest of the model config fixed)."""
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


def width_collapse(fit: xr.Dataset, *, num_bootstrap: int | None = None, rng: np.random.Generator | None = None
                   ) -> dict[str, xr.DataArray]:
    """tau_mem * W (n, width, seed) and the power law fitted to it over every width and seed at once.

    The bootstrap size, CI level and test level are those the fit stage used (fit.nc's attrs, from the
    fit config); `num_bootstrap` overrides the first.

    Each (width, seed) is one column of the table the diagnostics see: the lack-of-fit test asks whether
    the per-n means bend away from a power law. Whether the widths collapse (tau_mem proportional to
    1/W) is a separate F test (scaling.collapse_test) of one intercept per width against a common one;
    the flag needs both."""
    num_bootstrap = int(fit.attrs["num_bootstrap"]) if num_bootstrap is None else num_bootstrap
    ci_level, alpha = float(fit.attrs["ci_level"]), float(fit.attrs["lack_of_fit_alpha"])
    scaled = (fit[names.TAU_MEM] * fit[names.WIDTH]).transpose(names.N, names.WIDTH, names.SEED)
    table = scaled.values.reshape(scaled.sizes[names.N], -1)  # [N, W * S]
    out = diagnose(scaled[names.N].values, table, num_bootstrap=num_bootstrap, ci_level=ci_level, alpha=alpha,
                   rng=rng or np.random.default_rng(0))
    collapse_p = collapse_test(scaled[names.N].values, scaled.transpose(names.WIDTH, names.N, names.SEED).values)
    return {
        names.TAU_MEM_TIMES_WIDTH: scaled,
        f"{names.TAU_MEM_TIMES_WIDTH}_exponent": xr.DataArray(out["exponent"]),
        f"{names.TAU_MEM_TIMES_WIDTH}_prefactor": xr.DataArray(out["prefactor"]),
        f"{names.TAU_MEM_TIMES_WIDTH}_exponent_ci": xr.DataArray(out["exponent_ci"], dims=(names.CI_BOUND,)),
        f"{names.TAU_MEM_TIMES_WIDTH}_{names.LOF_PVALUE}": xr.DataArray(out["lof_p_value"]),
        f"{names.TAU_MEM_TIMES_WIDTH}_collapse_pvalue": xr.DataArray(collapse_p),
        f"{names.TAU_MEM_TIMES_WIDTH}_{names.POWER_LAW_OK}": xr.DataArray(bool(out["power_law_ok"] and collapse_p >= alpha)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem sweep", __doc__, "diffmem.stages.sweep")
    parser.add_argument("--key", required=True, choices=[names.WIDTH, names.STRENGTH, names.TIKHONOV])
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
    if not len(args.values) == len(args.cubes) == len(args.fits):
        fail("diffmem sweep: --values, --cubes and --fits must have the same length")
    values = [int(v) if args.key == names.WIDTH else v for v in args.values]
    model = read_json_arg(args.model) if args.model else {}
    n_params = None
    if args.key == names.WIDTH:
        if not model or args.dataset is None:
            fail("diffmem sweep: a width sweep needs --model and --dataset (for the parameter counts)")
        ds = load_dataset(args.dataset)
        shape = tuple(ds.image_shape) if ds.image_shape else (int(ds.pool.shape[1]),)
        n_params = parameter_counts(model, values, data_shape=shape)

    attrs = {"experiment": args.experiment}
    cube = combine_sweep(load_parts(args.cubes), key=args.key, values=values, attrs=attrs, n_params=n_params)
    fit = combine_sweep([read_fit(path) for path in args.fits], key=args.key, values=values, attrs=attrs, n_params=n_params)
    if args.key == names.WIDTH and names.TAU_MEM in fit:
        fit = names.annotate(fit.assign(width_collapse(fit)))
    if args.key == names.TIKHONOV:
        cube.attrs["regularization"] = "penalty on the trained score"
    elif model:
        cube.attrs["regularization"] = model.get("regularization", "")
    # the parts' agreeing CF attrs survive the concat; title, history and date are the sweep's own
    for ds, what in ((cube, "cube"), (fit, "fit")):
        ds.attrs.update(cf_global_attrs(
            title=f"diffmem {what} of experiment {args.experiment}, swept over {args.key}",
            summary=ds.attrs.get("summary", f"diffmem {what} over {args.key}"),
            command=f"diffmem sweep --key {args.key} ({len(values)} sub-experiments)"))
    atomic_to_netcdf(cube, args.out_cube)
    write_fit(fit, args.out_fit)
    path = make_sweep_figure(cube, fit, args.outdir, title=args.experiment)
    summary = ", ".join(f"{args.key} {v:g}: n* = {float(s):g}" for v, s in zip(fit[args.key].values, fit[names.N_STAR].values))
    log.info(f"{dict(cube.sizes)}; {summary} -> {args.out_cube}, {path}")
    if names.TAU_MEM_TIMES_WIDTH in fit:
        per_width = ", ".join(f"width {w:g}: b = {float(b):.2f}" for w, b in
                              zip(fit[names.WIDTH].values, fit[names.TAU_MEM_EXPONENT].values))
        lo, hi = fit[f"{names.TAU_MEM_TIMES_WIDTH}_exponent_ci"].values
        log.info(f"tau_mem per width: {per_width}; tau_mem * W over all widths ~ n^"
                 f"{float(fit[f'{names.TAU_MEM_TIMES_WIDTH}_exponent']):.2f} [{lo:.2f}, {hi:.2f}], lack-of-fit p = "
                 f"{float(fit[f'{names.TAU_MEM_TIMES_WIDTH}_{names.LOF_PVALUE}']):.3g}, widths differ (no collapse) p = "
                 f"{float(fit[f'{names.TAU_MEM_TIMES_WIDTH}_collapse_pvalue']):.3g}")


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
