"""Side-effect helpers shared by the stages: atomic writes, provenance, errors."""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, NoReturn

import numpy as np


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
    from diffmem import __version__

    return {
        "diffmem_version": __version__,
        "git_commit": git_commit(),
        "config_hash": config_hash,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
