"""An experiment at a glance: `diffmem summary results/<experiment>`.

Reads the experiment's fit.nc (and cube.nc when present) and prints, as plain-text tables
(`format_table`): tau_mem per n and seed (rows n, columns seeds, with the geometric mean), its fit
tau_mem = A n^b (exponent, both CIs, lack-of-fit test, verdict) and local slopes, the exponents by
level, tau_gen likewise (by tolerance), the final f_mem per n, n*, the twin-model and per-example copy
summaries when the cube has them, and then every other variable and attribute of fit.nc generically
(a table each), so diagnostics added to the fit later show up without a change here.

Run: `diffmem summary results/digits` (or a path to a fit.nc)
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import xarray as xr

from diffmem import names
from diffmem.fitfile import read_fit
from diffmem.io import NETCDF_ENGINE, fail
from diffmem.onsets import final_values, verdict
from diffmem.stages import stage_parser

# a fit variable with at most this many values is printed in full (as a table) by the generic section
SMALL_SIZE = 24
# attrs that are provenance, printed in the header rather than among the diagnostics
PROVENANCE = ("experiment", "diffmem_version", "git_commit", "config_hash", "created")
CENSORED = "censored"  # the cell of a run whose onset was not reached by the last checkpoint


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Plain-text columns two spaces apart (no cell holds two spaces in a row): columns of numbers
    right-aligned, the others left-aligned."""
    table = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[j]) for row in table) for j in range(len(header))]
    right = [bool(rows) and all(_is_number(row[j]) for row in table[1:]) for j in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)).rstrip()
                     for row in table)


def _is_number(cell: str) -> bool:
    if cell in ("n/a", CENSORED):
        return True
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _table(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    return textwrap.indent(format_table(header, rows), indent).splitlines()


def _num(value: float) -> str:
    value = float(value)
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.4g}"


def _interval(bounds) -> str:
    lo, hi = np.asarray(bounds, float).ravel()
    return f"[{_num(lo)}, {_num(hi)}]"


def _cell(value) -> str:
    value = np.asarray(value)
    if value.dtype.kind == "b":
        return "yes" if bool(value) else "no"
    if value.dtype.kind in "fiu":
        return _num(value)
    return str(value)


def _ci_name(fit: xr.Dataset) -> str:
    level = fit.attrs.get("ci_level")
    return f"{float(level) * 100:g} % CI" if level is not None else "CI"


def _geo_mean(values: np.ndarray) -> float:
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.exp(np.log(v).mean())) if v.size else float("nan")


def onset_lines(fit: xr.Dataset, prefix: str, label: str) -> list[str]:
    """tau per n and seed (rows n, columns seeds, with the geometric mean), the power-law fit with
    both CIs, the lack-of-fit test and its verdict, and the local slopes."""
    if prefix not in fit:
        return [f"{label}: not in the fit"]
    tau = fit[prefix].transpose(names.N, ...)
    per_seed = tau.dims == (names.N, names.SEED)
    units = tau.attrs.get("units")
    lines = [f"{label} per n" + (" and seed" if per_seed else "") + (f", in {units}" if units not in (None, "1") else "")
             + f" (mean: geometric, of the reached; {CENSORED}: not reached by the last checkpoint):"]
    header = ["n", *([f"seed {int(s)}" for s in tau[names.SEED].values] if per_seed else []), "mean", CENSORED]
    rows = []
    for n in tau[names.N].values:
        v = tau.sel({names.N: n}).values.ravel()
        seeds = [CENSORED if np.isnan(x) else _num(x) for x in v] if per_seed else []
        rows.append([str(int(n)), *seeds, _num(_geo_mean(v)), f"{int(np.isnan(v).sum())}/{v.size}"])
    lines += _table(header, rows)
    return lines + scaling_lines(fit, prefix, label)


def scaling_lines(fit: xr.Dataset, prefix: str, label: str) -> list[str]:
    """The fit tau = A n^b of one onset: a table of its quantities, then its local slopes."""
    exponent = fit.get(f"{prefix}_exponent")
    if exponent is None:
        return []
    tau, short, ci_name = fit[prefix], label.split()[0], _ci_name(fit)
    reached = np.isfinite(tau.transpose(names.N, ...).values.reshape(tau.sizes[names.N], -1)).any(axis=1)
    lines = [f"fit {short} = A n^b, from {int(reached.sum())} value(s) of n with a reached {short}"
             + (" (too few for an exponent)" if reached.sum() < 2 else "") + ":"]
    rows = [["b", _num(exponent)]]
    for key, what in (("exponent_ci", "over n points and seeds"), (names.EXPONENT_CI_SEEDS, "over seeds only")):
        if f"{prefix}_{key}" in fit:
            rows.append([f"{ci_name} of b, {what}", _interval(fit[f"{prefix}_{key}"].values)])
    if f"{prefix}_prefactor" in fit:
        rows.append(["A", _num(fit[f"{prefix}_prefactor"])])
    p_value = fit.get(f"{prefix}_{names.LOF_PVALUE}")
    if p_value is not None:
        rows.append(["lack-of-fit p", _num(p_value)])
    if f"{prefix}_{names.LOF_RMS}" in fit:
        rows.append(["rms log residual", _num(fit[f"{prefix}_{names.LOF_RMS}"])])
    if f"{prefix}_{names.POWER_LAW_OK}" in fit and p_value is not None:
        rows.append(["power law", verdict(bool(fit[f"{prefix}_{names.POWER_LAW_OK}"]), float(p_value),
                                          int(np.isnan(tau.values).sum()))])
    lines += _table(["quantity", "value"], rows)
    slopes = fit.get(f"{prefix}_{names.LOCAL_SLOPE}")
    if slopes is not None and slopes.sizes.get(names.SEGMENT, 0):
        ci = fit.get(f"{prefix}_{names.LOCAL_SLOPE_CI}")
        lines.append(f"local slopes of log {short} against log n between consecutive n"
                     + (f" ({ci_name} from the seed scatter)" if ci is not None else "") + ":")
        rows = [[f"{int(lo)} -> {int(hi)}", _num(s), *([_interval(ci.values[i])] if ci is not None else [])]
                for i, (lo, hi, s) in enumerate(zip(slopes[names.N_LO].values, slopes[names.N_HI].values, slopes.values))]
        lines += _table(["n_lo -> n_hi", "slope", *([ci_name] if ci is not None else [])], rows)
    return lines


def levels_lines(fit: xr.Dataset, prefix: str, dim: str, label: str, note: str = "") -> list[str]:
    """The exponents of the onsets at several levels (or tolerances): rows `dim`, one column per
    value of the other index (normalization), cells "b [CI] lack-of-fit p"."""
    exponent = fit.get(f"{prefix}_exponent")
    if exponent is None or dim not in exponent.dims:
        return []
    others = [d for d in exponent.dims if d != dim]
    exponent = exponent.transpose(dim, *others)
    ci = fit[f"{prefix}_exponent_ci"].transpose(dim, *others, names.CI_BOUND)
    p_value = fit[f"{prefix}_{names.LOF_PVALUE}"].transpose(dim, *others)
    columns = list(np.ndindex(*(exponent.sizes[d] for d in others)))
    header = [dim, *(", ".join(_column_label(exponent, d, i) for d, i in zip(others, idx)) or "b [CI] p"
                     for idx in columns)]
    rows = [[_coord_label(exponent, dim, r),
             *(f"{_num(exponent.values[(r, *idx)])} {_interval(ci.values[(r, *idx)])} p={_num(p_value.values[(r, *idx)])}"
               for idx in columns)]
            for r in range(exponent.sizes[dim])]
    return [f"{label}, b [{_ci_name(fit)}] and lack-of-fit p{note}:"] + _table(header, rows)


def final_lines(fit: xr.Dataset) -> list[str]:
    lines = []
    if names.F_MEM_FINAL in fit:
        f, se = fit[names.F_MEM_FINAL], fit.get(names.F_MEM_FINAL_SE)
        if f.dims == (names.N,):
            lines.append("final f_mem (last checkpoint, over seeds):")
            rows = [[str(int(n)), _num(v), _num(se.values[i]) if se is not None else "n/a"]
                    for i, (n, v) in enumerate(zip(f[names.N].values, f.values))]
            lines += _table(["n", "mean", "s.e."], rows)
        else:  # more indices than n (a sweep summarized as a whole): the generic table
            lines.append("final f_mem (last checkpoint, mean over seeds):")
            lines += _table(*variable_table(f))
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
        last = final_values(cube[names.TWIN_CLOSER])
        last = last.mean([d for d in last.dims if d != names.N])  # over seeds (and a sweep's values)
        lines.append("twin models, fraction of sample pairs closer to each other than to their training sets "
                     "(last checkpoint, mean over seeds; near 0: each copies its own set, near 1: they agree):")
        lines += _table(["n", "fraction"], [[str(int(n)), _num(v)] for n, v in zip(last[names.N].values, last.values)])
    if names.COPY_COUNT in cube:
        counts = cube[names.COPY_COUNT]
        copied = (counts > 0).sum(names.TRAIN_INDEX)
        size = counts.notnull().sum(names.TRAIN_INDEX)
        frac = copied / size.where(size > 0)
        frac = frac.mean([d for d in frac.dims if d != names.N])
        lines.append("training points copied by >= 1 memorized sample at the last checkpoint (mean over seeds):")
        lines += _table(["n", "fraction"], [[str(int(n)), _num(v)] for n, v in zip(frac[names.N].values, frac.values)])
    return lines


_ONSET_PARTS = ("", "_censored", "_exponent", "_prefactor", "_exponent_ci", f"_{names.EXPONENT_CI_SEEDS}",
                f"_{names.LOCAL_SLOPE}", f"_{names.LOCAL_SLOPE_CI}", f"_{names.LOF_PVALUE}", f"_{names.LOF_RMS}",
                f"_{names.POWER_LAW_OK}")
# what the sections above print; the rest of the fit goes to the generic section
KNOWN = ({f"{prefix}{part}" for prefix in (names.TAU_MEM, names.TAU_GEN) for part in _ONSET_PARTS}
         | {f"{prefix}{part}" for prefix in (names.TAU_MEM_LEVELS, names.TAU_GEN_TOLERANCES, names.TAU_GEN_LEVELS)
            for part in ("", "_censored", "_exponent", "_exponent_ci", f"_{names.LOF_PVALUE}")}
         | {names.F_MEM_FINAL, names.F_MEM_FINAL_SE, names.N_STAR})


def _coord_label(da: xr.DataArray, dim: str, i: int) -> str:
    """The label of index i along dim: its coordinate value (a segment: "n_lo -> n_hi"), or i."""
    if dim == names.SEGMENT and names.N_LO in da.coords and names.N_HI in da.coords:
        return f"{int(da[names.N_LO].values[i])} -> {int(da[names.N_HI].values[i])}"
    if dim not in da.coords:
        return str(i)
    value = da[dim].values[i]
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def _column_label(da: xr.DataArray, dim: str, i: int) -> str:
    """A column's label: "seed 0", "level 0.1" for numbers; the value alone for names and segments."""
    label = _coord_label(da, dim, i)
    named = dim == names.SEGMENT or (dim in da.coords and da[dim].dtype.kind in "OUST")  # T: numpy's StringDType
    return label if named else f"{dim} {label}"


def variable_table(da: xr.DataArray) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a variable: rows its first dimension (all but the last when it has more
    than two), columns its values (one per value of the last dimension)."""
    if da.ndim == 1:
        dim = da.dims[0]
        return [dim, "value"], [[_coord_label(da, dim, i), _cell(v)] for i, v in enumerate(da.values)]
    lead, last = da.dims[:-1], da.dims[-1]
    header = [*lead, *(_column_label(da, last, j) for j in range(da.sizes[last]))]
    rows = [[*(_coord_label(da, d, i) for d, i in zip(lead, idx)), *(_cell(v) for v in da.values[idx])]
            for idx in np.ndindex(*(da.sizes[d] for d in lead))]
    return header, rows


def diagnostic_lines(fit: xr.Dataset) -> list[str]:
    """Every fit variable not printed above: one value on a line, small ones as tables, larger ones
    by shape and range."""
    lines = []
    for name in sorted(fit.data_vars):
        if name in KNOWN:
            continue
        da = fit[name]
        long_name = da.attrs.get("long_name", "")
        label = f"{name}" + (f" ({long_name})" if long_name else "")
        if da.size == 1:
            lines.append(f"  {label}: {_cell(da.values.ravel()[0])}")
        elif da.size <= SMALL_SIZE:
            lines.append(f"  {label}:")
            lines += _table(*variable_table(da), indent="    ")
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
        lines += levels_lines(fit, names.TAU_MEM_LEVELS, names.LEVEL, "tau_mem by level",
                              " (raw: f_mem; final: f_mem / its final value)")
        metric = fit.attrs.get("tau_gen_metric")
        lines += onset_lines(fit, names.TAU_GEN, f"tau_gen ({metric})" if metric else "tau_gen")
        lines += levels_lines(fit, names.TAU_GEN_TOLERANCES, names.TOLERANCE, "tau_gen by tolerance")
        lines += levels_lines(fit, names.TAU_GEN_LEVELS, names.QUALITY_LEVEL,
                              "tau_gen by quality level (targets common to every run)")
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
    parser = stage_parser("diffmem summary", __doc__, "diffmem.stages.summary")
    parser.add_argument("experiment", help="results/<experiment> folder (or its fit.nc)")
    args = parser.parse_args(argv)
    try:
        fit_path, cube_path = resolve(args.experiment)
    except FileNotFoundError as exc:
        fail(str(exc))
    try:
        fit = read_fit(fit_path)
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
