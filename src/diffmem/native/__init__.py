"""diffmem's own CPU kernels: C sources built at first use with the system's C compiler and loaded with ctypes.

`library()` returns the loaded `mlp_step` library (mlp_step.c: the default MLP's whole training step, a run
of consecutive steps of one model, and its forward for sampling) or raises `NativeUnavailable` with the reason in one line. The build is
`$CC` (default `cc`) with `-O3 -funroll-loops -std=c11 -mavx2 -mfma -shared -fPIC`: the same instructions
on every x86-64 machine with AVX2 and FMA (not -march=native), and C11 keeps the compiler from contracting
the scalar a * b + c into FMAs on its own, so the numbers do not depend on which such machine built it
(unrolling repeats a loop's operations in their order: the same numbers as without it).
Machines without AVX2 and FMA (checked in /proc/cpuinfo, Linux only) and machines without a compiler
keep torch's kernels (`train.kernel: auto`) or get the error (`train.kernel: native`).

The built library is cached under `$DIFFMEM_NATIVE_CACHE` (default `~/.cache/diffmem/native`), named by
a hash of the source, the flags and the compiler's version; concurrent jobs each build to a private
temporary file and rename it into place, so a half-written library is never loaded.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("mlp_step.c")
FLAGS = ("-O3", "-funroll-loops", "-std=c11", "-mavx2", "-mfma", "-shared", "-fPIC")
ABI = 2  # mlp_step_abi() of the source this module calls
REQUIRED_CPU_FLAGS = ("avx2", "fma")


class NativeUnavailable(RuntimeError):
    """The native kernels cannot run here; the message says why in one line."""


def cache_dir() -> Path:
    return Path(os.environ.get("DIFFMEM_NATIVE_CACHE") or Path.home() / ".cache" / "diffmem" / "native")


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo, or None where there is none to read (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def check_cpu() -> None:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise NativeUnavailable(f"the native kernels need an x86-64 CPU with AVX2 and FMA; this is {platform.machine()}")
    flags = cpu_flags()
    if flags is None:
        raise NativeUnavailable("cannot read the CPU's flags (/proc/cpuinfo) to check for AVX2 and FMA")
    missing = [f for f in REQUIRED_CPU_FLAGS if f not in flags]
    if missing:
        raise NativeUnavailable(f"the native kernels need AVX2 and FMA; this CPU lacks {', '.join(missing)}")


def compiler() -> str:
    cc = os.environ.get("CC", "cc")
    path = shutil.which(cc)
    if path is None:
        raise NativeUnavailable(f"no C compiler to build the native kernels ({cc!r} is not on PATH; set CC)")
    return path


def _version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeUnavailable(f"cannot run the C compiler {cc} ({exc})") from exc


def build(cc: str | None = None, *, directory: Path | None = None) -> Path:
    """The built library's path: from the cache, or compiled now."""
    cc = cc or compiler()
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(FLAGS).encode() + _version(cc).encode()).hexdigest()[:16]
    directory = directory or cache_dir()
    target = directory / f"mlp_step-{key}.so"
    if target.exists():
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".mlp_step-", suffix=".so", dir=directory)
        os.close(fd)
    except OSError as exc:
        raise NativeUnavailable(f"cannot write the native kernels' cache {directory} ({exc}); set DIFFMEM_NATIVE_CACHE") from exc
    try:
        done = subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip()[:200])
            raise NativeUnavailable(f"building the native kernels failed: {first}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.cache
def library() -> ctypes.CDLL:
    """The loaded kernels (built on first use); NativeUnavailable where they cannot run."""
    check_cpu()
    lib = ctypes.CDLL(str(build()))
    i64p, vp = ctypes.POINTER(ctypes.c_int64), ctypes.c_void_p
    lib.mlp_step_abi.restype = ctypes.c_int64
    if lib.mlp_step_abi() != ABI:
        raise NativeUnavailable("the cached native library is of another version; delete " + str(cache_dir()))
    lib.mlp_step_workspace.argtypes = [i64p]
    lib.mlp_step_workspace.restype = ctypes.c_int64
    lib.mlp_step_precond_workspace.argtypes = [i64p]
    lib.mlp_step_precond_workspace.restype = ctypes.c_int64
    lib.mlp_step_precond.argtypes = [i64p, vp, vp, vp, vp, vp, vp, ctypes.c_int64, ctypes.c_double, vp, ctypes.c_int64,
                                     vp, vp, vp]
    lib.mlp_step_precond.restype = None
    lib.adam_update.argtypes = [ctypes.c_int64, vp, vp, vp, vp, vp, ctypes.c_double, ctypes.c_double, ctypes.c_double,
                                ctypes.c_double, ctypes.c_double, ctypes.c_double]
    lib.adam_update.restype = None
    d = ctypes.c_double
    lib.mlp_train_steps_workspace.argtypes = [i64p]
    lib.mlp_train_steps_workspace.restype = ctypes.c_int64
    lib.mlp_train_steps.argtypes = [i64p, vp, vp, vp, vp, vp, vp, vp, vp, ctypes.c_int64, vp, ctypes.c_int64, d, vp,
                                    ctypes.c_int64, d, d, d, d, vp, vp, ctypes.c_int64, vp, vp]
    lib.mlp_train_steps.restype = None
    lib.mlp_forward.argtypes = [i64p, vp, vp, vp, vp, vp]
    lib.mlp_forward.restype = None
    return lib


def available() -> str | None:
    """None where the native kernels run here, else the reason they do not."""
    try:
        library()
    except NativeUnavailable as exc:
        return str(exc)
    return None
