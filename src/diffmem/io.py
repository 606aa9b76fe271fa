"""Side-effect helpers shared by the stages: atomic writes, provenance, errors."""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from diffmem import __version__


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
    import torch

    _atomic(path, lambda tmp: torch.save(obj, tmp))


NETCDF_ENGINE = "h5netcdf"


def atomic_to_netcdf(ds, path: str | Path) -> None:
    """Write an xarray Dataset with the named engine to a temporary name, then rename."""
    _atomic(path, lambda tmp: ds.to_netcdf(tmp, engine=NETCDF_ENGINE), suffix=".nc")


def file_digest(path: str | Path | None) -> str | None:
    """sha256 of a file's bytes (cache keys that must change when an input file changes)."""
    if path is None:
        return None
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()[:16]


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


# CF (https://cfconventions.org) and ACDD 1.3 (https://wiki.esipfed.org/ACDD_1.3) global attributes, so
# generic NetCDF tools (ncdump, Panoply, THREDDS catalogues, xarray users) see what a file is and where
# its definitions come from
CONVENTIONS = "CF-1.10, ACDD-1.3"
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
