"""Training checkpoints: one file per step, each self-describing and loadable with weights_only=True.

A checkpoint holds the model (and EMA) state, optimizer state, RNG state, batch-order state, the
step, the resolved model/train config, the loss probe values and a format version. Files live in
a state directory keyed by the hash of everything that determines the training trajectory, so a
changed setting never resumes from incompatible weights, and raising `max_steps` resumes from the
last one.

Between grid steps, `resume.pt` in the same directory holds the latest resume state: the same
fields as a checkpoint without the probe losses, overwritten in place (atomically) every
`train.resume_every_min` minutes and when the job is told to stop (SIGTERM / SIGUSR1). It is only a
shortcut: a missing or unreadable one means training continues from the grid checkpoints.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from diffmem.io import atomic_torch_save

FORMAT_VERSION = 1
_NAME = re.compile(r"^step(\d{9})\.pt$")
RESUME_NAME = "resume.pt"


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
