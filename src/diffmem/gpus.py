"""Pick a GPU for this job when several are visible and no scheduler has pinned one.

On a cluster the scheduler pins GPUs: SLURM exports CUDA_VISIBLE_DEVICES with the GPU(s) it
granted, so a job sees one device, uses cuda:0, and nothing is chosen here.

On a workstation with several GPUs, Snakemake runs several jobs at once. `resources: gpu=1` on the
GPU rules with `snakemake --resources gpu=<number of GPUs>` (docs/scaling-out.md, "GPU") caps
how many run together, but Snakemake does not tell a job *which* GPU is free (there is no per-job
slot index). So each job claims one itself: it takes an exclusive, non-blocking `flock` on
`<lock_dir>/gpu-<id>.lock` for the first free visible GPU and keeps the file open until it exits.
The kernel drops a process's flocks when it dies, so a crashed or killed job never leaks a GPU and
nothing needs cleaning up. If every visible GPU is claimed (more concurrent GPU jobs than GPUs,
e.g. no `--resources gpu=` cap), the job shares one, chosen round robin by process id, and says so.
Lock files are named by the CUDA_VISIBLE_DEVICES entry (physical index or UUID), so jobs with
different masks still agree on which physical GPU a lock means.

`lock_dir` defaults to `$DIFFMEM_GPU_LOCK_DIR` or `<tmp>/diffmem-gpu-locks-<uid>`: jobs that should
coordinate must share it (the same machine's temp folder does).

Use: `device, lease = select_device(train_cfg.device)` in a stage's main(); keep `lease` alive.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

log = logging.getLogger(__name__)


@dataclass
class GpuLease:
    """A claimed GPU: the visible index, its id and the open lock file (None when shared)."""

    index: int
    gpu_id: str
    lock_file: IO | None

    @property
    def shared(self) -> bool:
        return self.lock_file is None

    def release(self) -> None:
        if self.lock_file is not None:
            self.lock_file.close()  # closing the file drops the flock
            self.lock_file = None


def default_lock_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("DIFFMEM_GPU_LOCK_DIR") or Path(tempfile.gettempdir()) / f"diffmem-gpu-locks-{os.getuid()}")


def visible_gpu_ids(device_count: int, env: Mapping[str, str] = os.environ) -> list[str]:
    """Ids of the visible GPUs in CUDA order: the CUDA_VISIBLE_DEVICES entries, else 0..count-1."""
    mask = env.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return [str(i) for i in range(device_count)]
    ids = [part.strip() for part in mask.split(",") if part.strip()]
    return ids[:device_count]


def claim_gpu(gpu_ids: list[str], *, lock_dir: Path, pid: int | None = None) -> GpuLease:
    """Lock the first free GPU of `gpu_ids`; share one (round robin by pid) when all are claimed."""
    if not gpu_ids:
        raise ValueError("no GPU to claim")
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index, gpu_id in enumerate(gpu_ids):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in gpu_id)
        fh = open(lock_dir / f"gpu-{safe}.lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")  # for humans: who holds it
        fh.flush()
        return GpuLease(index, gpu_id, fh)
    index = (os.getpid() if pid is None else pid) % len(gpu_ids)
    return GpuLease(index, gpu_ids[index], None)


def select_device(
    requested: str, *, env: Mapping[str, str] = os.environ, device_count: int | None = None,
    lock_dir: Path | None = None, log: Callable[[str], None] = log.info,
) -> tuple[torch.device, GpuLease | None]:
    """Resolve a configured device ('auto', 'cpu', 'cuda', 'cuda:N', 'mps') for this process.

    'auto' and 'cuda' claim a free GPU when more than one is visible; an explicit 'cuda:N' is used
    as given. Returns the device and the lease to keep for the life of the job (None if unclaimed).
    """
    if requested not in ("auto", "cuda"):
        if requested.startswith("cuda") and (device_count if device_count is not None else
                                              torch.cuda.device_count()) == 0:
            raise RuntimeError(f"device {requested!r} requested but CUDA is not available")
        return torch.device(requested), None
    count = torch.cuda.device_count() if device_count is None else device_count
    ids = visible_gpu_ids(count, env)
    if not ids:
        if requested == "cuda":
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        return torch.device("cpu"), None
    if len(ids) == 1:  # pinned by the scheduler (or a single-GPU machine)
        return torch.device("cuda:0"), None
    lease = claim_gpu(ids, lock_dir=lock_dir or default_lock_dir(env))
    if lease.shared:
        log(f"all {len(ids)} visible GPUs are claimed by other jobs; sharing cuda:{lease.index} "
            f"(cap concurrent GPU jobs with `--resources gpu={len(ids)}`)")
    else:
        log(f"claimed cuda:{lease.index} (GPU {lease.gpu_id}) of {len(ids)} visible")
    return torch.device(f"cuda:{lease.index}"), lease
