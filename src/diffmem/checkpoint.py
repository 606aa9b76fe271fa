"""Training checkpoints: one file per grid step, each self-describing and loadable with weights_only=True.

A full checkpoint holds the model (and EMA) state, optimizer state, RNG state, batch-order state, the
step, the resolved model/train config, the loss probe values and a format version. A weights-only
checkpoint (`train.keep: weights` or `sampling`) holds the same without the optimizer, RNG and
batch-order state: what sampling and scoring read, about a third of the size with Adam.

Where they live (the training stage moves them; the engine only sees one folder):
- `runs/<run>/checkpoints/`: a finished run's checkpoints, the training job's declared output, with
  `trajectory.json` naming the trajectory hash (everything that determines the training trajectory)
  they belong to, so a changed setting never resumes from incompatible weights.
- `runs/<run>/checkpoints.partial/`: the state of a run while it trains (undeclared, so Snakemake
  never deletes it under a failed or preempted job); moved into `checkpoints/` when the run finishes.

Between grid steps, `resume.pt` holds the latest resume state: the same fields as a full checkpoint
without the probe losses, overwritten in place (atomically) every `train.resume_every_min` minutes and
when the job is told to stop (SIGTERM / SIGUSR1). It is only a shortcut: a missing or unreadable one
means training continues from the grid checkpoints. Under `train.keep: weights` a finished run keeps
one, at its last step, so that a raised `max_steps` resumes exactly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from diffmem.io import atomic_torch_save, atomic_write_text

FORMAT_VERSION = 1
_NAME = re.compile(r"^step(\d{9})\.pt$")
RESUME_NAME = "resume.pt"
TRAJECTORY_NAME = "trajectory.json"
PARTIAL_SUFFIX = ".partial"
KEEP_POLICIES = ("all", "weights", "sampling")
# the fields of a full checkpoint that only resuming needs
RESUME_ONLY = ("optimizer", "rng", "perm", "cursor")
# train.center: the mean subtracted from the run's data [*data_shape], added back to its samples
DATA_OFFSET = "data_offset"


class CheckpointError(RuntimeError):
    pass


def checkpoint_path(state_dir: str | Path, step: int) -> Path:
    return Path(state_dir) / f"step{step:09d}.pt"


def existing_steps(state_dir: str | Path) -> list[int]:
    d = Path(state_dir)
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir() if (m := _NAME.match(p.name)))


def save_checkpoint(state_dir: str | Path, step: int, payload: dict[str, Any]) -> Path:
    path = checkpoint_path(state_dir, step)
    atomic_torch_save(path, {"version": FORMAT_VERSION, "step": step, **payload})
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint; a truncated or foreign file raises CheckpointError naming it."""
    return _load(Path(path), what="checkpoint", map_location=map_location,
                 hint="delete it to retrain from the previous checkpoint")


def resume_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / RESUME_NAME


def save_resume(state_dir: str | Path, step: int, payload: dict[str, Any]) -> Path:
    """Overwrite `resume.pt` with the state after `step` (atomically: a kill mid-write keeps the old one)."""
    path = resume_path(state_dir)
    atomic_torch_save(path, {"version": FORMAT_VERSION, "step": step, **payload})
    return path


def load_resume(state_dir: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The resume state of `state_dir`, or None if there is none; an unreadable file raises CheckpointError."""
    path = resume_path(state_dir)
    if not path.exists():
        return None
    return _load(path, what="resume file", map_location=map_location,
                 hint="training continues from the grid checkpoints")


def remove_resume(state_dir: str | Path) -> bool:
    """Delete `resume.pt`; returns whether there was one."""
    path = resume_path(state_dir)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _load(path: Path, *, what: str, map_location: str | torch.device, hint: str) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every unreadable file is reported the same way
        raise CheckpointError(
            f"{what} {path} is corrupt or unreadable ({type(exc).__name__}: {exc}); {hint}"
        ) from exc
    if (not isinstance(ckpt, dict) or ckpt.get("version") != FORMAT_VERSION or "model" not in ckpt
            or not isinstance(ckpt.get("step"), int)):
        raise CheckpointError(f"{what} {path} is not a diffmem v{FORMAT_VERSION} checkpoint; {hint}")
    return ckpt


def is_resumable(ckpt: dict[str, Any]) -> bool:
    """Whether training can continue from this checkpoint (a full one, not weights only)."""
    return all(key in ckpt for key in RESUME_ONLY)


def weights_only(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's fields without the training state (what `strip_to_weights` leaves)."""
    return {k: v for k, v in ckpt.items() if k not in RESUME_ONLY}


def strip_to_weights(path: str | Path, ckpt: dict[str, Any] | None = None) -> bool:
    """Rewrite a full checkpoint as weights only (atomically); returns whether it changed.

    `ckpt`, if given, is the file's content already in memory (the training loop keeps the payload it
    saved), which saves reading it back; it must be exactly what `path` holds.
    """
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    if not any(key in ckpt for key in RESUME_ONLY):
        return False
    atomic_torch_save(path, weights_only(ckpt))
    return True


def partial_dir(declared: str | Path) -> Path:
    """The folder a run trains in before its checkpoints move to `declared` (checkpoints/ -> checkpoints.partial/)."""
    declared = Path(declared)
    return declared.with_name(declared.name + PARTIAL_SUFFIX)


def trajectory_of(folder: str | Path) -> str | None:
    """The trajectory hash a checkpoint folder's trajectory.json names, or None (no file, or unreadable)."""
    try:
        return str(json.loads((Path(folder) / TRAJECTORY_NAME).read_text())["trajectory_hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _files(folder: Path) -> list[Path]:
    """The files a checkpoint folder holds (Snakemake's hidden .snakemake_timestamp left out)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)


def adopt_checkpoints(declared: str | Path, trajectory: str, *, log: Callable[[str], None]) -> Path:
    """Prepare the folder a run trains in and return it (`partial_dir(declared)`).

    It keeps what it holds of this trajectory (a job stopped mid-run) and takes what `declared` holds
    of it (a finished run whose max_steps was raised), as hard links, so `declared` stays whole until
    `publish_checkpoints` replaces it: Snakemake restores it if the job fails. Anything of another
    trajectory is dropped from the partial folder; `declared`'s is replaced when the run finishes.
    """
    declared, work = Path(declared), partial_dir(declared)
    if work.exists() and trajectory_of(work) != trajectory:
        if _files(work):
            log(f"discarding {work}: it holds another trajectory's state")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if trajectory_of(declared) == trajectory:
        taken = 0
        for src in _files(declared):
            if not (work / src.name).exists():
                _link_or_copy(src, work / src.name)
                taken += src.name != TRAJECTORY_NAME
        if taken:
            log(f"continuing from the {taken} files of {declared}")
    elif _files(declared):
        log(f"{declared} holds another trajectory's checkpoints; they are replaced when this run finishes")
    if trajectory_of(work) != trajectory:  # a new folder; an existing one keeps its file (and its mtime)
        atomic_write_text(work / TRAJECTORY_NAME, json.dumps({"trajectory_hash": trajectory}) + "\n")
    return work


def publish_checkpoints(declared: str | Path, *, log: Callable[[str], None]) -> None:
    """Replace the files of `declared` with those of the finished run's partial folder, and remove that."""
    declared, work = Path(declared), partial_dir(declared)
    declared.mkdir(parents=True, exist_ok=True)
    incoming = {p.name for p in _files(work)}
    for old in _files(declared):
        if old.name not in incoming:
            old.unlink() if old.is_file() else shutil.rmtree(old)
    for src in _files(work):
        os.replace(src, declared / src.name)
    shutil.rmtree(work)
    size = sum(p.stat().st_size for p in _files(declared))
    log(f"{declared}: {len(incoming)} files, {size / 2**20:.1f} MiB")
