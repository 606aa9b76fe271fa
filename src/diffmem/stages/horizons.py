"""The horizons stage: tau_mem and its exponent in n as if training had stopped at each step of `fit.horizons`.

One long run per (n, seed) holds every shorter run (constant learning rate): the readout cuts the
cube's f_mem at each horizon S and fits tau_mem = A n^b per S, censoring the runs that have not
memorized by S (`diffmem.horizons`). `plot` draws horizons.png (`diffmem.figures.horizons`).

Run:
    diffmem horizons-fit --cube cube.nc --fit-cfg '<json>' --out horizons.nc
    diffmem horizons-plot --cube cube.nc --horizons horizons.nc --out figures/horizons.png [--title T]
(equivalently `python -m diffmem.stages.horizons fit|plot ...`).
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import xarray as xr

from diffmem import names
from diffmem.config import ConfigError, FitConfig, read_json_arg
from diffmem.figures.common import ci_label
from diffmem.figures.horizons import make_horizons_figure
from diffmem.horizons import F_MEM_AT_HORIZON, HORIZON, TAU_MEM_HORIZONS, horizon_fits
from diffmem.io import NETCDF_ENGINE, atomic_to_netcdf, carried_provenance, cf_global_attrs, fail
from diffmem.log import configure
from diffmem.stages import stage_parser

log = logging.getLogger(__name__)


def describe(readout: xr.Dataset) -> list[str]:
    """One log line per horizon: b with its CI, the local slopes, the censored runs, f_mem at the horizon."""
    lines = []
    seeds = readout.sizes[names.SEED]
    for norm in readout[names.NORMALIZATION].values:
        lines.append(f"f_mem {'as measured' if norm == 'raw' else 'divided by its value at S'} ({norm}):")
        lines += describe_normalization(readout.sel({names.NORMALIZATION: norm}), seeds=seeds)
    return lines


def describe_normalization(readout: xr.Dataset, *, seeds: int) -> list[str]:
    lines = []
    for h in readout[HORIZON].values:
        sel = {HORIZON: h}
        b = float(readout[f"{TAU_MEM_HORIZONS}_exponent"].sel(sel))
        lo, hi = readout[f"{TAU_MEM_HORIZONS}_exponent_ci"].sel(sel).values
        slopes = ", ".join(f"{v:.2f}" for v in readout[f"{TAU_MEM_HORIZONS}_{names.LOCAL_SLOPE}"].sel(sel).values)
        censored = int(readout[f"{TAU_MEM_HORIZONS}_censored"].sel(sel).sum())
        f_mem = ", ".join(f"{v:.2f}" for v in readout[F_MEM_AT_HORIZON].sel(sel).mean(names.SEED).values)
        lines.append(f"  S = {int(h)}: b = {b:.3f} {ci_label(lo, hi, seeds=seeds)}; local slopes {slopes}; "
                     f"{censored} censored; mean f_mem at S per n: {f_mem}")
    return lines


def fit_main(argv: list[str]) -> None:
    parser = stage_parser("diffmem horizons-fit", __doc__, "diffmem.stages.horizons")
    parser.add_argument("--cube", required=True)
    parser.add_argument("--fit-cfg", required=True, help="fit config slice (JSON or path); uses fit.horizons")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        cfg = FitConfig.from_dict(read_json_arg(args.fit_cfg))
    except ConfigError as exc:
        fail(str(exc))
    if not cfg.horizons:
        fail("config error at 'fit.horizons': the horizons stage needs a list of training lengths")
    with xr.open_dataset(args.cube, engine=NETCDF_ENGINE) as cube:
        cube = cube.load()
    try:
        readout = horizon_fits(cube[names.F_MEM], cfg.horizons, threshold=cfg.tau_mem_threshold,
                               num_bootstrap=cfg.num_bootstrap, ci_level=cfg.ci_level, rng=np.random.default_rng(0),
                               alpha=cfg.lack_of_fit_alpha)
    except ValueError as exc:
        fail(f"horizons: {exc}")
    dropped = sorted(set(int(h) for h in cfg.horizons) - set(int(h) for h in readout[HORIZON].values))
    if dropped:
        log.warning(f"horizons beyond the last checkpoint of some run, dropped: {dropped}")
    readout.attrs.update(carried_provenance(cube.attrs))
    readout.attrs.update(cf_global_attrs(
        title=f"diffmem tau_mem by training length, experiment {cube.attrs.get('experiment', '?')}",
        summary="tau_mem per training-set size and seed read from the runs cut at each training length (horizon), "
                "and its power-law fit in n per horizon with bootstrap confidence intervals",
        command="diffmem horizons-fit", previous=cube.attrs))
    atomic_to_netcdf(readout, args.out)
    log.info(f"tau_mem (f_mem >= {cfg.tau_mem_threshold:g}) by training length, {int(cfg.ci_level * 100)} % CIs "
             f"-> {args.out}")
    for line in describe(readout):
        log.info(line)


def plot_main(argv: list[str]) -> None:
    parser = stage_parser("diffmem horizons-plot", __doc__, "diffmem.stages.horizons")
    parser.add_argument("--cube", required=True)
    parser.add_argument("--horizons", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    with xr.open_dataset(args.cube, engine=NETCDF_ENGINE) as cube, \
            xr.open_dataset(args.horizons, engine=NETCDF_ENGINE) as readout:
        path = make_horizons_figure(cube.load(), readout.load(), args.out, title=args.title)
    log.info(f"wrote {path}")


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("fit", "plot"):
        fail("usage: python -m diffmem.stages.horizons fit|plot ... (python -m pydoc diffmem.stages.horizons)")
    (fit_main if argv[0] == "fit" else plot_main)(argv[1:])


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
