"""Write requirements/lock.txt: the exact versions, as installed in the running environment, of every package
that `diffmem[test]` needs, found by walking the requirements of pyproject.toml (the dependencies and the test
extra) through the installed distributions' metadata.

CI installs with it as constraints (.ci/run), so a new release of any of them cannot change what CI tests:

    python -m pip install torch==2.13.0 -c requirements/lock.txt -e ".[test]"

A constraints file only limits versions; it installs nothing that the requirements do not ask for. torch's
CUDA-only dependencies (nvidia-*, triton, cuda-*) are left out, and local version labels dropped (2.13.0+cpu
is written 2.13.0), so the same lock holds for the CPU wheel and for PyPI's CUDA one.

To move the lock (a new bound in pyproject.toml, a newer release): install the new versions, run the tests,
then from the repository root

    python requirements/make_lock.py            # rewrite requirements/lock.txt
    python requirements/make_lock.py --check    # exit 1 if requirements/lock.txt differs from this environment

Needs `packaging` (and on Python 3.10 `tomli`), which an install of diffmem[test] brings.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomli comes with pytest, in the test extra
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
EXTRA = "test"
# torch's wheels for CUDA pull these in; the CPU wheel has none, and pinning them would tie the lock to one build.
CUDA_ONLY = re.compile(r"^(nvidia-.*|triton|cuda-.*)$")


def root_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[Requirement]:
    """The project's dependencies and those of its test extra, as pyproject.toml states them."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"][EXTRA]]]


def applies(req: Requirement, extras: set[str]) -> bool:
    """Whether `req` is needed here, by a distribution installed with `extras`."""
    return req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in extras | {""})


def closure(roots: list[Requirement]) -> dict[str, str]:
    """{canonical name: installed version} of every distribution the roots need, transitively."""
    versions: dict[str, str] = {}
    walked: dict[str, set[str]] = {}  # name -> the extras whose requirements were followed
    todo = [req for req in roots if applies(req, set())]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if CUDA_ONLY.match(name):
            continue
        extras = set(req.extras)
        if name in walked and extras <= walked[name]:
            continue
        walked[name] = walked.get(name, set()) | extras
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            sys.exit(f"make_lock: {req} is required but {name} is not installed; install diffmem[{EXTRA}] first")
        versions[name] = Version(dist.version).public
        todo.extend(sub for sub in map(Requirement, dist.requires or []) if applies(sub, walked[name]))
    return versions


def lock_text(versions: dict[str, str]) -> str:
    header = [
        "# The exact versions CI tests with, as constraints: python -m pip install torch==2.13.0 -c requirements/lock.txt -e \".[test]\"",
        f"# Written by `python requirements/make_lock.py` (do not edit) on Python {platform.python_version()}, {platform.system()} {platform.machine()}:",
        f"# every package diffmem[{EXTRA}] needs, transitively, less torch's CUDA-only ones (nvidia-*, triton), so that the",
        "# lock holds for torch's CPU and CUDA wheels alike.",
    ]
    return "\n".join([*header, *(f"{name}=={version}" for name, version in sorted(versions.items()))]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the lock file differs instead of writing it")
    args = parser.parse_args(argv)
    text = lock_text(closure(root_requirements()))
    if args.check:
        pins = [line for line in text.splitlines() if not line.startswith("#")]
        locked = [line for line in LOCK.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
        if pins != locked:
            sys.exit(f"make_lock: {LOCK.relative_to(REPO)} differs from this environment; run python requirements/make_lock.py")
        return
    LOCK.write_text(text, encoding="utf-8")
    print(f"make_lock: wrote {sum(not line.startswith('#') for line in text.splitlines())} pins to {LOCK.relative_to(REPO)}")


if __name__ == "__main__":
    main()
