"""tau_mem as if training had stopped at step S: the exponent b of tau_mem ~ n^b against the training length.

With a constant learning rate (diffmem's optimizers have no schedule, and nothing in a run depends
on `train.max_steps` but where it stops), the first S steps of a run trained to S_max are the run
trained to S. So one long run per (n, seed) gives tau_mem(n) for every shorter training length:
read each run's f_mem at its checkpoints up to S only. A run trained to S also has a checkpoint at S
itself (`max_steps` is always one); the readout has it exactly when S is a step of the long run's
grid, so choose the horizons on the grid (a horizon between grid steps reads the run up to the last
grid step before it). A run whose f_mem has not reached the threshold by S is censored at S (its
tau_mem NaN), as the fit stage censors a run that ends before memorizing; the fits leave censored
runs out, so an exponent with censored runs at the largest n is biased low. On raw f_mem a run's
onset, once reached, does not move with S: the raw exponent changes with S only through the runs
that memorize between two horizons. The normalized onset moves with S for every run.

`horizon_fits` gives, per horizon S (dimension `horizon`):
- `tau_mem_horizons (normalization, horizon, n, seed)`: the onset (`onsets.onset_step`, threshold
  `fit.tau_mem_threshold`) of the run cut at S, of f_mem as measured (raw) and of f_mem divided by its
  value at S (final: arXiv 2505.17638's normalization by the last checkpoint, which moves with S even
  for runs that memorized long before S), with the power law and every diagnostic of
  `onsets.scaling_fit` per normalization and horizon (exponent, CIs, local slopes, lack-of-fit test,
  censored flags);
- `f_mem_at_horizon (horizon, n, seed)`: f_mem at the last checkpoint up to S, how far a censored run got.

The horizons are the experiment's `fit.horizons`; those beyond the last checkpoint that every run
reached are dropped (there the runs do not say what a run to S would do).

Used by the horizons stage (`diffmem.stages.horizons`) and its figure (`diffmem.figures.horizons`).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from diffmem import names
from diffmem.onsets import last_valid, onset_times, scaling_fit

TAU_MEM_HORIZONS = "tau_mem_horizons"
HORIZON = "horizon"
F_MEM_AT_HORIZON = "f_mem_at_horizon"

ATTRS = {
    HORIZON: {"long_name": "training length S: the runs are read at their checkpoints up to step S only",
              "units": "1"},
    TAU_MEM_HORIZONS: {"long_name": "first step at which f_mem reaches the threshold, in the run cut at the horizon "
                                    "(NaN: not reached by the horizon, censored)", "units": "1"},
    F_MEM_AT_HORIZON: {"long_name": "f_mem at the last checkpoint up to the horizon", "units": "1"},
}


def usable_horizons(f_mem: xr.DataArray, horizons) -> list[int]:
    """The horizons, sorted, up to the last checkpoint that every run reached (a finite f_mem)."""
    steps = f_mem[names.STEP].values
    last = xr.apply_ufunc(lambda v: last_valid(np.where(np.isfinite(v), steps, np.nan)), f_mem,
                          input_core_dims=[[names.STEP]], vectorize=True, output_dtypes=[float])
    reach = float(last.min())
    return sorted({int(h) for h in horizons if h <= reach})


def cut_at(f_mem: xr.DataArray, horizon: int) -> xr.DataArray:
    """f_mem at the checkpoints up to `horizon` only: the runs as if trained to that step."""
    return f_mem.sel({names.STEP: f_mem[names.STEP].values <= horizon})


def horizon_onsets(f_mem: xr.DataArray, horizons, *, threshold: float) -> xr.DataArray:
    """tau_mem (normalization, horizon, n, seed) of the runs cut at each horizon: where f_mem (raw) or f_mem
    divided by its value at the horizon (final, arXiv 2505.17638's normalization) first reaches `threshold`;
    NaN where it has not by the horizon (or, normalized, where f_mem is 0 at the horizon)."""
    by_norm = []
    for norm in names.NORMALIZATIONS:
        readings = []
        for h in horizons:
            cut = cut_at(f_mem, h)
            if norm == "final":
                final = xr.apply_ufunc(last_valid, cut, input_core_dims=[[names.STEP]], vectorize=True,
                                       output_dtypes=[float])
                cut = cut / final.where(final > 0)
            readings.append(onset_times(cut, threshold=threshold))
        by_norm.append(xr.concat(readings, dim=xr.DataArray(list(horizons), dims=HORIZON, name=HORIZON)))
    return xr.concat(by_norm, dim=xr.DataArray(list(names.NORMALIZATIONS), dims=names.NORMALIZATION,
                                               name=names.NORMALIZATION))


def f_mem_at(f_mem: xr.DataArray, horizons) -> xr.DataArray:
    """f_mem (horizon, n, seed) at each run's last finite checkpoint up to the horizon."""
    readings = [xr.apply_ufunc(last_valid, cut_at(f_mem, h), input_core_dims=[[names.STEP]], vectorize=True,
                               output_dtypes=[float]) for h in horizons]
    return xr.concat(readings, dim=xr.DataArray(list(horizons), dims=HORIZON, name=HORIZON))


def horizon_fits(f_mem: xr.DataArray, horizons, *, threshold: float, num_bootstrap: int, ci_level: float,
                 rng: np.random.Generator, alpha: float) -> xr.Dataset:
    """The readout of the module docstring for f_mem (n, seed, step) and the requested horizons."""
    kept = usable_horizons(f_mem, horizons)
    if not kept:
        raise ValueError(f"no horizon up to the last checkpoint every run reached: {sorted(horizons)}")
    tau = horizon_onsets(f_mem, kept, threshold=threshold)
    variables = scaling_fit(tau, prefix=TAU_MEM_HORIZONS, num_bootstrap=num_bootstrap, ci_level=ci_level,
                            rng=rng, alpha=alpha)
    variables[F_MEM_AT_HORIZON] = f_mem_at(f_mem, kept)
    out = xr.Dataset(variables, coords={names.CI_BOUND: ["lower", "upper"]})
    out.attrs.update({"tau_mem_threshold": threshold, "ci_level": ci_level, "num_bootstrap": num_bootstrap,
                      "lack_of_fit_alpha": alpha,
                      "horizons_requested": np.asarray(sorted(int(h) for h in horizons), dtype=np.int64),
                      "note": "censored runs (tau NaN: f_mem below the threshold at the horizon) are excluded "
                              "from the fits"})
    out = names.annotate(out)
    for name in out.variables:
        attrs = ATTRS.get(str(name)) or diagnostic_attrs(str(name))
        if attrs:
            out[name].attrs.update(attrs)
    return out


def diagnostic_attrs(name: str) -> dict | None:
    """long_name and units of a `tau_mem_horizons_<diagnostic>` variable: tau_mem's, read per horizon."""
    suffix = name[len(TAU_MEM_HORIZONS) + 1:]
    if not name.startswith(TAU_MEM_HORIZONS + "_") or suffix not in names.DIAGNOSTICS:
        return None
    attrs = dict(names.ATTRS.get(f"{names.TAU_MEM}_{suffix}", {}))
    if "long_name" in attrs:
        attrs["long_name"] = attrs["long_name"].replace("tau_mem", "tau_mem at each horizon", 1)
    return attrs
