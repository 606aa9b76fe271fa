"""Side-effect helpers shared by the stages: atomic writes, provenance, errors."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from diffmem import __version__, names


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop a stage with one clear line on stderr (no traceback for user errors)."""
    print(f"diffmem: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _file_mode() -> int:
    """The mode a plain open() would give a new file: 0o666 less the umask (mkstemp's files are 0o600,
    which would hide results from the group on a shared cluster filesystem)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic(path: str | Path, write: Callable[[str], Any], suffix: str = "") -> None:
    """Write through `write(tmp_path)` then rename, so a finished file is never half-overwritten."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write(path: str | Path, write: Callable[[str], Any], suffix: str = "") -> None:
    """Write a file through `write(tmp_path)` then rename it into place: a finished file is never half-overwritten."""
    _atomic(path, write, suffix)


def atomic_savez(path: str | Path, **arrays: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    _atomic(path, write)


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    _atomic(path, write)


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """torch.save to `path` atomically. Through an open file: torch.save given a path names the archive's
    inner folder after the file, here the random temporary name, so the same object would give other
    bytes at every save, and every digest of the file (the quality cache keys on the classifier's) with them."""
    import torch

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)

    _atomic(path, write)


# netCDF-C through netCDF4-python. The files are netCDF4 (HDF5) either way and read the same with
# engine="h5netcdf" (every variable and attribute identical, tests/test_netcdf_files.py); netCDF-C opens and
# writes them 5-7x faster: 36 per-run files of the default run read in 0.8-1.0 s against 3.6-5.7 s, a run's
# scores.nc written in 40-60 ms against 280-400 ms (docs/benchmarks.md)
NETCDF_ENGINE = "netcdf4"
# zlib with byte shuffle: float32 distances, float64 fractions and int32 indices shrink to about half
# (the default cube: 5.47 MB contiguous and uncompressed, 3.09 MB compressed); level 4 costs little time
NETCDF_COMPRESSION = {"zlib": True, "complevel": 4, "shuffle": True}
# HDF5 chunks up to 1 MiB, h5py's default chunk cache per variable. Variables under 16 KiB stay
# contiguous and uncompressed: a chunked variable's index costs about 2 KiB, more than zlib saves there
CHUNK_BYTES = 2**20
MIN_CHUNKED_BYTES = 2**14
# integer variables (names.INTEGER_VARIABLES) on disk; the fill value marks entries an outer join padded
INTEGER_DTYPE, INTEGER_FILL = "int32", -1


def chunk_shape(shape: tuple[int, ...], itemsize: int, *, max_bytes: int = CHUNK_BYTES) -> tuple[int, ...]:
    """HDF5 chunk of an array in C order: trailing dimensions whole while the chunk stays under
    `max_bytes`, the first one that does not fit cut into as many slices as fit, the leading ones 1.

    A cube variable (n, seed, step, sample) gets chunks of one run's consecutive steps with all their
    samples, a per-run one (step, sample) chunks along step; small variables are one chunk."""
    chunks, size = [1] * len(shape), itemsize
    for i in reversed(range(len(shape))):
        chunks[i] = max(1, min(shape[i], max_bytes // size))
        size *= chunks[i]
        if chunks[i] < shape[i]:
            break
    return tuple(chunks)


def netcdf_encoding(ds) -> dict[str, dict]:
    """How every variable of `ds` is written: integer variables as int32 with _FillValue -1 (xarray's
    default decoding gives float64 with NaN there), every numeric array of `MIN_CHUNKED_BYTES` or more
    compressed and chunked by `chunk_shape`. Built from the names alone, so whatever encoding a variable was read with (a
    per-run file's `coordinates`, its chunks or dtype) does not leak into the file written from it."""
    encoding = {}
    for name, var in ds.variables.items():
        enc: dict = {}
        if name in names.INTEGER_VARIABLES:
            enc.update(dtype=INTEGER_DTYPE, _FillValue=INTEGER_FILL)
        itemsize = np.dtype(enc.get("dtype", var.dtype)).itemsize
        if var.ndim and var.dtype.kind in "biuf" and var.size * itemsize >= MIN_CHUNKED_BYTES:
            enc.update(NETCDF_COMPRESSION, chunksizes=chunk_shape(var.shape, itemsize))
        encoding[name] = enc
    return encoding


def atomic_to_netcdf(ds, path: str | Path) -> None:
    """Write an xarray Dataset with the named engine and `netcdf_encoding` to a temporary name, then rename.

    Dask-backed variables (a lazily combined cube) are rechunked to their HDF5 chunks first and
    written chunk by chunk: a compressed chunk written in pieces is recompressed each time and leaves
    its older copies in the file as dead space."""
    ds = ds.drop_encoding()
    encoding = netcdf_encoding(ds)
    lazy = {name: var.chunk(dict(zip(var.dims, encoding[name]["chunksizes"])))
            for name, var in ds.data_vars.items() if var.chunks is not None and "chunksizes" in encoding[name]}
    ds = ds.assign(lazy)
    _atomic(path, lambda tmp: ds.to_netcdf(tmp, engine=NETCDF_ENGINE, encoding=encoding), suffix=".nc")


def _cf_encoded(attrs) -> list[str]:
    """The attributes by which CF encodes a variable's values on disk (xarray decodes them): a scale or
    offset, a time's units and calendar, a fill value other than a float's NaN (which decodes to itself)."""
    found = [key for key in ("scale_factor", "add_offset", "calendar") if key in attrs]
    found += [key for key in ("_FillValue", "missing_value")
              if key in attrs and not np.all(np.isnan(np.asarray(attrs[key], dtype=float)))]
    if " since " in str(attrs.get("units", "")):
        found.append("units")
    return found


def read_netcdf_raw(path: str | Path, variables: list[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A NetCDF file's global attributes and the values of a few of its variables, read with the engine's own
    library (NETCDF_ENGINE) instead of xarray, for a stage that needs nothing else from the file: importing
    xarray, pandas and dask costs a job ~0.7 CPU-seconds. Values come as stored, so a variable that CF
    encodes (an integer's fill value, a scale, a time) is refused rather than read undecoded."""
    import netCDF4

    with netCDF4.Dataset(path, "r") as f:
        f.set_auto_maskandscale(False)  # the values as stored: no masked arrays, nothing scaled
        values = {}
        for name in variables:
            var = f.variables[name]
            encoded = _cf_encoded({key: var.getncattr(key) for key in var.ncattrs()})
            if encoded:
                raise ValueError(f"{path}: variable {name!r} is CF-encoded ({', '.join(encoded)}); read it with xarray")
            values[name] = np.asarray(var[...])
        return {key: f.getncattr(key) for key in f.ncattrs()}, values


def sha256_of(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def file_digest(path: str | Path | None) -> str | None:
    """sha256 of a file's bytes, shortened (cache keys that must change when an input file changes)."""
    return None if path is None else sha256_of(path)[:16]


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(config_hash: str) -> dict[str, str]:
    return {
        "diffmem_version": __version__,
        "git_commit": git_commit(),
        "config_hash": config_hash,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# what a result file derived from another (a fit from its cube) carries over from it
PROVENANCE_KEYS = ("diffmem_version", "git_commit", "config_hash", "experiment")


def carried_provenance(attrs: dict, extra: tuple[str, ...] = ()) -> dict:
    """The provenance attributes (PROVENANCE_KEYS, and `extra`) of the file a result was derived from."""
    return {k: attrs[k] for k in (*PROVENANCE_KEYS, *extra) if k in attrs}


# CF (https://cfconventions.org) and ACDD 1.3 (https://wiki.esipfed.org/ACDD_1.3) global attributes, so
# generic NetCDF tools (ncdump, Panoply, THREDDS catalogues, xarray users) see what a file is and where
# its definitions come from. CF-1.8: the files use nothing of CF-1.9 or 1.10, and 1.8 is the newest version
# the CF checker (cfchecker 4.1.0, tests/test_cf_conventions.py) validates
CONVENTIONS = "CF-1.8, ACDD-1.3"
REFERENCES = (
    "Bonnaire, Urfin, Biroli & Mezard (2025), Why Diffusion Models Don't Memorize: The Role of Implicit "
    "Dynamical Regularization in Training, arXiv:2505.17638; "
    "Baptista, Dasgupta, Kovachki, Oberai & Stuart (2025), Memorization and Regularization in Generative "
    "Diffusion Models, arXiv:2501.15785; "
    "Halder & Pehlevan (2024), A solvable generative model with a linear, one-step denoiser, arXiv:2411.17807; "
    "Yoon, Choi, Kwon & Lee (2023), Diffusion Probabilistic Models Generalize when They Fail to Memorize "
    "(the d1/d2 < 1/3 criterion); "
    "Kadkhodaie, Guth, Simoncelli & Mallat (2024), Generalization in diffusion models arises from "
    "geometry-adaptive harmonic representations, ICLR 2024"
)
KEYWORDS = "diffusion models, memorization, generalization, training dynamics, nearest neighbours"


def cf_global_attrs(*, title: str, summary: str, command: str, previous: dict | None = None) -> dict[str, str]:
    """CF / ACDD global attributes of a result file: Conventions, title, summary, keywords, source,
    references, date_created and a history line ("<UTC time>: <command>") appended to the history of
    the file it was made from (`previous`, e.g. the cube's attrs for the fit file)."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = str((previous or {}).get("history", "")).strip()
    return {
        "Conventions": CONVENTIONS,
        "title": title,
        "summary": summary,
        "keywords": KEYWORDS,
        "source": f"diffmem {__version__} (git {git_commit()})",
        "references": REFERENCES,
        "date_created": now,
        "history": (before + "\n" if before else "") + f"{now}: {command}",
    }
