"""An experiment at a glance: `diffmem summary results/<experiment>`.

Reads the experiment's fit.nc (and cube.nc when present) and prints the training-set sizes, tau_mem
per n with the fitted exponent and its confidence interval, tau_gen likewise, the final f_mem per n,
n*, the twin-model and per-example copy summaries when the cube has them, and then every other small
variable and attribute of fit.nc generically, so diagnostics added to the fit later show up without
a change here.

Run: `diffmem summary results/digits` (or a path to a fit.nc)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from diffmem import names
from diffmem.io import NETCDF_ENGINE, fail

# a fit variable with at most this many values is printed in full by the generic section
SMALL_SIZE = 24
# attrs that are provenance, printed in the header rather than among the diagnostics
PROVENANCE = ("experiment", "diffmem_version", "git_commit", "config_hash", "created")


def _num(value: float) -> str:
    value = float(value)
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.4g}"


def _geo_mean(values: np.ndarray) -> float:
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.exp(np.log(v).mean())) if v.size else float("nan")


def onset_lines(fit: xr.Dataset, prefix: str, label: str) -> list[str]:
    """tau per n (geometric mean over seeds, censored count) and the power-law fit with its CI."""
    if prefix not in fit:
        return [f"{label}: not in the fit"]
    tau = fit[prefix].transpose(names.N, ...)
    lines = [f"{label} per n (geometric mean over seeds; censored = not reached by the last checkpoint):"]
    for n in tau[names.N].values:
        v = tau.sel({names.N: n}).values.ravel()
        censored = int(np.isnan(v).sum())
        lines.append(f"  n={int(n):>7d}: {_num(_geo_mean(v)):>9}  ({censored}/{v.size} censored)")
    exponent, prefactor = fit.get(f"{prefix}_exponent"), fit.get(f"{prefix}_prefactor")
    ci = fit.get(f"{prefix}_exponent_ci")
    if exponent is not None:
        used = np.unique(np.broadcast_to(tau[names.N].values[:, None], tau.shape)[np.isfinite(tau.values)])
        lines.append(f"  fit from {used.size} value(s) of n with a reached {label.split()[0]}"
                     + (" (too few for an exponent)" if used.size < 2 else ""))
        ci_text = f" [{_num(ci.values[0])}, {_num(ci.values[1])}]" if ci is not None else ""
        level = fit.attrs.get("ci_level")
        level_text = f" ({float(level) * 100:g} % CI)" if level is not None else ""
        lines.append(f"  fit {label} = A n^b: b = {_num(exponent)}{ci_text}{level_text}, A = {_num(prefactor)}")
    return lines


def final_lines(fit: xr.Dataset) -> list[str]:
    lines = []
    if names.F_MEM_FINAL in fit:
        se = fit.get(names.F_MEM_FINAL_SE)
        lines.append("final f_mem (last checkpoint, mean +- s.e. over seeds):")
        for i, n in enumerate(fit[names.N].values):
            f = fit[names.F_MEM_FINAL].isel({names.N: i})
            if f.size > 1:  # a sweep: one value per swept value
                lines.append(f"  n={int(n):>7d}: " + ", ".join(_num(v) for v in f.values.ravel()))
                continue
            s = se.isel({names.N: i}) if se is not None else np.nan
            lines.append(f"  n={int(n):>7d}: {_num(f)} +- {_num(s)}")
    if names.N_STAR in fit:
        threshold = fit.attrs.get("tau_mem_threshold")
        values = np.atleast_1d(fit[names.N_STAR].values)
        text = ", ".join(_num(v) for v in values)
        lines.append(f"n* (largest n whose final f_mem reaches {threshold}): {text}")
    return lines


def cube_lines(cube: xr.Dataset) -> list[str]:
    """The grid of the cube, and the twin-model and per-example copy summaries when it has them."""
    lines = []
    grid = [f"{dim} {cube.sizes[dim]}" for dim in (names.N, names.SEED, names.STEP, names.SAMPLE) if dim in cube.dims]
    lines.append("cube: " + ", ".join(grid))
    if names.STEP in cube.dims:
        steps = cube[names.STEP].values
        lines.append(f"checkpoints: step {int(steps.min())} ... {int(steps.max())}")
    if names.TWIN_CLOSER in cube:
        last = _last_valid(cube[names.TWIN_CLOSER])
        last = last.mean([d for d in last.dims if d != names.N])  # over seeds (and a sweep's values)
        lines.append("twin models, fraction of sample pairs closer to each other than to their training sets "
                     "(last checkpoint, mean over seeds; near 0: each copies its own set, near 1: they agree):")
        lines += [f"  n={int(n):>7d}: {_num(v)}" for n, v in zip(last[names.N].values, last.values)]
    if names.COPY_COUNT in cube:
        counts = cube[names.COPY_COUNT]
        copied = (counts > 0).sum(names.TRAIN_INDEX)
        size = counts.notnull().sum(names.TRAIN_INDEX)
        frac = copied / size.where(size > 0)
        frac = frac.mean([d for d in frac.dims if d != names.N])
        lines.append("training points copied by >= 1 memorized sample at the last checkpoint (mean over seeds):")
        lines += [f"  n={int(n):>7d}: {_num(v)}" for n, v in zip(frac[names.N].values, frac.values)]
    return lines


def _last_valid(da: xr.DataArray) -> xr.DataArray:
    """The last non-NaN value along step of every other index (runs may stop at different steps)."""
    def last(v: np.ndarray) -> float:
        ok = np.flatnonzero(np.isfinite(v))
        return float(v[ok[-1]]) if ok.size else np.nan

    return xr.apply_ufunc(last, da, input_core_dims=[[names.STEP]], vectorize=True, output_dtypes=[float])


KNOWN = {names.TAU_MEM, names.TAU_MEM_CENSORED, names.TAU_MEM_EXPONENT, names.TAU_MEM_EXPONENT_CI,
         names.TAU_MEM_PREFACTOR, names.TAU_GEN, names.TAU_GEN_CENSORED, names.TAU_GEN_EXPONENT,
         names.TAU_GEN_EXPONENT_CI, names.TAU_GEN_PREFACTOR, names.F_MEM_FINAL, names.F_MEM_FINAL_SE, names.N_STAR}


def _format_values(da: xr.DataArray) -> str:
    values = da.values
    if values.dtype.kind in "fc":
        flat = ", ".join(_num(v) for v in np.ravel(values))
    else:
        flat = ", ".join(str(v) for v in np.ravel(values))
    if da.ndim == 0:
        return flat
    coords = " x ".join(f"{d}={list(np.asarray(da[d].values).tolist()) if d in da.coords else da.sizes[d]}"
                        for d in da.dims)
    return f"[{flat}]  ({coords})"


def diagnostic_lines(fit: xr.Dataset) -> list[str]:
    """Every fit variable not printed above: small ones in full, larger ones by shape and range."""
    lines = []
    for name in sorted(fit.data_vars):
        if name in KNOWN:
            continue
        da = fit[name]
        long_name = da.attrs.get("long_name", "")
        label = f"{name}" + (f" ({long_name})" if long_name else "")
        if da.size <= SMALL_SIZE:
            lines.append(f"  {label}: {_format_values(da)}")
        else:
            shape = ", ".join(f"{d} {da.sizes[d]}" for d in da.dims)
            if da.dtype.kind in "fiub":
                v = da.values.astype(float)
                lines.append(f"  {label}: [{shape}] min {_num(np.nanmin(v))}, median {_num(np.nanmedian(v))}, "
                             f"max {_num(np.nanmax(v))}")
            else:
                lines.append(f"  {label}: [{shape}]")
    for key, value in fit.attrs.items():
        if key not in PROVENANCE:
            lines.append(f"  attr {key}: {value}")
    return lines


def summarize(fit: xr.Dataset, cube: xr.Dataset | None = None, *, title: str = "") -> str:
    """The text `diffmem summary` prints."""
    head = title or fit.attrs.get("experiment", "experiment")
    lines = [f"== {head} =="]
    prov = [f"{k} {fit.attrs[k]}" for k in PROVENANCE[1:] if k in fit.attrs]
    if prov:
        lines.append("; ".join(prov))
    if names.N in fit.coords:
        lines.append("n: " + ", ".join(str(int(n)) for n in fit[names.N].values)
                     + (f"; seeds: {', '.join(str(int(s)) for s in fit[names.SEED].values)}" if names.SEED in fit.coords else ""))
    if cube is not None:
        lines += cube_lines(cube)
    sweep = next((d for d in (names.WIDTH, names.STRENGTH) if d in fit.dims), None)
    if sweep is None:
        return "\n".join(lines + fit_lines(fit))
    for value in fit[sweep].values:  # a sweep: one block per swept value
        lines.append(f"-- {sweep} = {value:g} --")
        lines += fit_lines(fit.sel({sweep: value}))
    return "\n".join(lines)


def fit_lines(fit: xr.Dataset) -> list[str]:
    """Onsets, final memorization and the other fit variables of one (non-sweep) fit."""
    lines = []
    if names.TAU_MEM in fit or names.TAU_GEN in fit:
        threshold = fit.attrs.get("tau_mem_threshold")
        lines += onset_lines(fit, names.TAU_MEM, f"tau_mem (f_mem >= {threshold})")
        metric = fit.attrs.get("tau_gen_metric")
        lines += onset_lines(fit, names.TAU_GEN, f"tau_gen ({metric})" if metric else "tau_gen")
    elif "note" in fit.attrs:
        lines.append(f"onsets: {fit.attrs['note']}")
    lines += final_lines(fit)
    diagnostics = diagnostic_lines(fit)
    if diagnostics:
        lines.append("fit diagnostics and other fit variables:")
        lines += diagnostics
    return lines


def resolve(path: str) -> tuple[Path, Path | None]:
    """(fit.nc, cube.nc or None) from an experiment folder or a fit.nc path; one-line errors."""
    p = Path(path)
    if p.is_dir():
        fit, cube = p / "fit.nc", p / "cube.nc"
    elif p.suffix == ".nc":
        fit, cube = p, p.with_name("cube.nc")
    else:
        raise FileNotFoundError(f"{p} is neither an experiment folder nor a fit.nc file")
    if not fit.exists():
        raise FileNotFoundError(f"{fit} does not exist (run the workflow for this experiment first)")
    return fit, cube if cube.exists() else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="diffmem summary", description=__doc__.split("\n\n")[0],
                                     epilog="details: python -m pydoc diffmem.stages.summary",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="results/<experiment> folder (or its fit.nc)")
    args = parser.parse_args(argv)
    try:
        fit_path, cube_path = resolve(args.experiment)
    except FileNotFoundError as exc:
        fail(str(exc))
    try:
        with xr.open_dataset(fit_path, engine=NETCDF_ENGINE) as fit:
            fit = fit.load()
        cube = None
        if cube_path is not None:
            with xr.open_dataset(cube_path, engine=NETCDF_ENGINE) as c:
                # only what the summary reads: a cube's per-sample variables can be large
                keep = [v for v in (names.TWIN_CLOSER, names.COPY_COUNT) if v in c]
                cube = c[keep].load()
    except (OSError, ValueError) as exc:
        fail(f"cannot read {fit_path} or its cube as NetCDF ({exc})")
    print(summarize(fit, cube, title=args.experiment))


if __name__ == "__main__":
    main(sys.argv[1:])
