"""fit.nc on disk: one NetCDF group per readout, so a reader finds tau_mem's fit without reading every name.

In memory the fit is one flat Dataset (`diffmem.onsets.fit_onsets`), each readout's variables named
`<readout>_<diagnostic>`. On disk (an `xarray.DataTree`):

```
/                      f_mem_final, f_mem_final_se, n_star, n_half, ... (and the global attributes)
/tau_mem               tau_mem (n, seed): the first step with f_mem >= fit.tau_mem_threshold, and its
                       power law tau_mem = prefactor * n^exponent with every diagnostic (names.DIAGNOSTICS)
/tau_mem_levels        tau_mem at each level and normalization, with the same diagnostics per level
/tau_gen               tau_gen (n, seed) and its power law, as /tau_mem
/tau_gen_tolerances    tau_gen at each tolerance, with the same diagnostics per tolerance
/tau_gen_levels        tau_gen at each quality level (a target common to every run), with the same diagnostics
/tau_mem_times_width   a width sweep's fit.nc: tau_mem * width and its joint power law
```

In a group the readout keeps its name and the diagnostics drop the prefix: `tau_mem_exponent_ci` is
`/tau_mem/exponent_ci`. Open it with `xr.open_datatree("fit.nc")` (`fit["tau_mem"]["exponent"]`) or,
flat as the stages use it, with `read_fit`. `xr.open_dataset("fit.nc")` gives the root group.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from diffmem import names
from diffmem.io import NETCDF_ENGINE, atomic_write, netcdf_encoding

# The groups, each named for its readout's variable prefix, longest first (tau_mem_levels before tau_mem),
# with the variable the readout itself keeps its name as inside the group.
GROUPS = {
    names.TAU_MEM_TIMES_WIDTH: names.TAU_MEM_TIMES_WIDTH,  # a width sweep's collapse (diffmem.stages.sweep)
    names.TAU_MEM_LEVELS: names.TAU_MEM,
    names.TAU_GEN_TOLERANCES: names.TAU_GEN,
    names.TAU_GEN_LEVELS: names.TAU_GEN,
    names.TAU_MEM: names.TAU_MEM,
    names.TAU_GEN: names.TAU_GEN,
}

ORDER = (names.TAU_MEM, names.TAU_MEM_LEVELS, names.TAU_GEN, names.TAU_GEN_TOLERANCES, names.TAU_GEN_LEVELS,
         names.TAU_MEM_TIMES_WIDTH)


def group_of(name: str) -> tuple[str, str] | None:
    """(group, name in the group) of a flat fit variable, or None for the root group."""
    for group, readout in GROUPS.items():
        if name == group:
            return group, readout
        if name.startswith(group + "_") and name[len(group) + 1:] in names.DIAGNOSTICS:
            return group, name[len(group) + 1:]
    return None


def to_tree(fit: xr.Dataset) -> xr.DataTree:
    """The flat fit as groups: each group's variables with the coordinates they use (and only those)."""
    members: dict[str, dict[str, str]] = {}
    for name in fit.data_vars:
        place = group_of(str(name))
        if place is not None:
            members.setdefault(place[0], {})[str(name)] = place[1]
    grouped = {name for group in members.values() for name in group}
    nodes = {"/": fit.drop_vars(sorted(grouped))}
    for group in ORDER:  # a fixed order: the file lists its groups the same way every time
        if group in members:
            part = fit[list(members[group])].rename(members[group])
            part.attrs = {}
            nodes[f"/{group}"] = part.drop_vars([c for c in part.coords if c not in part.dims and c not in _used(part)])
    return xr.DataTree.from_dict(nodes)


def _used(ds: xr.Dataset) -> set[str]:
    """Non-dimension coordinates that a data variable of `ds` shares a dimension with (n_lo, n_hi on segment)."""
    dims = {d for var in ds.data_vars.values() for d in var.dims}
    return {str(c) for c, coord in ds.coords.items() if set(coord.dims) <= dims}


def from_tree(tree: xr.DataTree) -> xr.Dataset:
    """The flat fit back from its groups (names prefixed again, coordinates and attributes as written)."""
    flat = tree.to_dataset(inherit=True)
    for group, readout in GROUPS.items():
        if group not in tree.children:
            continue
        node = tree[group].to_dataset(inherit=True)
        rename = {name: group if name == readout else f"{group}_{name}" for name in node.data_vars}
        flat = flat.merge(node.rename(rename), compat="no_conflicts", combine_attrs="override")
    flat.attrs = dict(tree.attrs)
    return flat


# On disk a string-valued dimension coordinate (bound: lower/upper; normalization: raw/final) is a
# label variable `<dim>_label`, since CF wants coordinate variables numeric; `read_fit` restores it.
LABEL_SUFFIX = "_label"


def _labels_to_disk(ds: xr.Dataset) -> xr.Dataset:
    text = [c for c in ds.dims if c in ds.coords and ds[c].dtype.kind in "USOT"]  # T: numpy 2 StringDType
    for dim in text:
        ds = ds.reset_index(dim).rename_vars({dim: f"{dim}{LABEL_SUFFIX}"})
    return ds


def _labels_from_disk(ds: xr.Dataset) -> xr.Dataset:
    for name in [str(v) for v in ds.variables if str(v).endswith(LABEL_SUFFIX)]:
        dim = name[: -len(LABEL_SUFFIX)]
        if ds[name].dims == (dim,):
            ds = ds.rename_vars({name: dim}).set_xindex(dim)
    return ds


def write_fit(fit: xr.Dataset, path: str | Path) -> None:
    """Write the fit in groups (atomically), each variable compressed and typed as `netcdf_encoding` says."""
    tree = to_tree(_labels_to_disk(fit.drop_encoding()))
    encoding = {}
    for node in tree.subtree:
        ds = node.to_dataset(inherit=False)
        # labels as character arrays (the CF checker does not take netCDF-4 variable-length strings)
        encoding[node.path] = {**netcdf_encoding(ds), **{name: {"dtype": "S1"} for name in ds.variables if str(name).endswith(LABEL_SUFFIX)}}
    atomic_write(path, lambda tmp: tree.to_netcdf(tmp, engine=NETCDF_ENGINE, encoding=encoding), suffix=".nc")


def read_fit(path: str | Path) -> xr.Dataset:
    """A fit.nc as one flat Dataset, loaded (a file without groups, such as a sweep's, as it is)."""
    with xr.open_datatree(path, engine=NETCDF_ENGINE) as tree:
        return _labels_from_disk(from_tree(tree) if tree.children else tree.to_dataset()).load()
