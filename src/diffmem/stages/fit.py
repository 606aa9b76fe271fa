"""The fit stage: onset times tau_mem and tau_gen per (n, seed) and their scaling with n, from cube.nc.

What is read and how it is fitted is documented in `diffmem.onsets` (the readouts) and
`diffmem.scaling` (the power-law diagnostics).

fit.nc keeps each readout's variables in its own NetCDF group (`diffmem.fitfile`).

Run: `diffmem fit --cube cube.nc --fit-cfg '<json>' --out fit.nc`
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import xarray as xr

from diffmem import names
from diffmem.config import ConfigError, FitConfig, read_json_arg
from diffmem.fitfile import write_fit
from diffmem.io import NETCDF_ENGINE, fail
from diffmem.log import configure
from diffmem.onsets import describe_levels, describe_scaling, fit_onsets
from diffmem.scaling import POWER_LAW_CRITERION
from diffmem.stages import stage_parser

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem fit", __doc__, "diffmem.stages.fit")
    parser.add_argument("--cube", required=True)
    parser.add_argument("--fit-cfg", required=True, help="fit config slice (JSON or path)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        cfg = FitConfig.from_dict(read_json_arg(args.fit_cfg))
    except ConfigError as exc:
        fail(str(exc))
    log.debug(f"{cfg}")
    with xr.open_dataset(args.cube, engine=NETCDF_ENGINE) as cube:
        try:
            fit = fit_onsets(cube.load(), cfg, rng=np.random.default_rng(0))
        except ConfigError as exc:
            fail(str(exc))
    write_fit(fit, args.out)
    finals = ", ".join(f"n={int(n)}: {float(v):.3f}" for n, v in zip(fit[names.N].values, fit[names.F_MEM_FINAL].values))
    log.info(f"final f_mem {finals}; n* = {float(fit[names.N_STAR]):g}")
    if names.N_HALF in fit:
        log.info(f"P(Delta > 0) crosses 1/2 at n = {float(fit[names.N_HALF].isel({names.STEP: -1})):.3g} (last step)")
    if names.TAU_MEM not in fit:
        log.info(f"{fit.attrs['note']} -> {args.out}")
        return
    log.info(f"tau_mem = first step with f_mem >= {cfg.tau_mem_threshold:g}; {fit.attrs['num_censored']} censored "
             f"runs; {int(cfg.ci_level * 100)} % CIs -> {args.out}")
    for line in describe_scaling(fit, names.TAU_MEM, label="tau_mem"):
        log.info(line)
    log.info("tau_mem by level (raw f_mem; final = f_mem / its final value):")
    for line in describe_levels(fit, names.TAU_MEM_LEVELS, names.LEVEL):
        log.info(line)
    if names.TAU_GEN in fit:
        log.info(f"tau_gen from {fit.attrs['tau_gen_metric']}, {fit.attrs['num_censored_gen']} censored runs")
        for line in describe_scaling(fit, names.TAU_GEN, label="tau_gen"):
            log.info(line)
        log.info("tau_gen by tolerance:")
        for line in describe_levels(fit, names.TAU_GEN_TOLERANCES, names.TOLERANCE):
            log.info(line)
        if names.TAU_GEN_LEVELS in fit:
            log.info(f"tau_gen readout: {fit.attrs['tau_gen_readout']}; tau_gen at quality levels common to every run "
                     "(target = best + q (first - best)):")
            for line in describe_levels(fit, names.TAU_GEN_LEVELS, names.QUALITY_LEVEL):
                log.info(line)
    log.info(f"criterion: {POWER_LAW_CRITERION} (alpha = {cfg.lack_of_fit_alpha:g})")


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
