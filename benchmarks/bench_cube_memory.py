"""Peak memory of the cube stage at the paper's CelebA grid: lazy combine against reading everything first.

Writes synthetic per-run files shaped like `diffmem score` and `diffmem train` write them (f_mem and
f_mem_se per step; ratio, d1, d2, d_test and nearest_train per step and sample; copy_count,
first_copy_step, train_pool_index and the two isolation distances per training example; train_loss and
test_loss per step) for every (n, seed) into a temporary folder, then runs `python -m
diffmem.stages.cube` on them in a child process twice: with `--lazy` (files opened lazily, the cube
written chunk by chunk: what the stage does for inputs over 64 MiB on disk) and with `--in-memory` (every
file read into memory first: what it does for smaller ones). Prints each child's peak resident memory (os.wait4's ru_maxrss), its seconds, the sizes of the
inputs and of the cube, and checks that both cubes read back identical.

Run: `python benchmarks/bench_cube_memory.py [--n 128 256 512 1024 2048 4096] [--seeds 5] [--steps 60]
[--samples 10000] [--keep DIR]`
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, load, usable_cores  # noqa: E402

from diffmem import names  # noqa: E402
from diffmem.copies import copy_statistics  # noqa: E402
from diffmem.io import NETCDF_ENGINE, atomic_to_netcdf  # noqa: E402

CELEBA_POOL = 202_599  # images in CelebA: the pool the training sets and nearest_train index into


def scores_part(n: int, seed: int, *, steps: np.ndarray, num_samples: int, rng: np.random.Generator) -> xr.Dataset:
    """A per-run scores.nc as `diffmem.stages.score.score_run` builds it, with random distances whose
    memorized fraction grows over training and shrinks with n."""
    num_steps = steps.size
    pool_index = rng.choice(CELEBA_POOL, size=n, replace=False)
    d1 = rng.lognormal(3.0, 0.3, (num_steps, num_samples)).astype(np.float32)  # [S, M]
    f_target = np.clip(np.log1p(steps) / np.log1p(steps[-1]) * 128 / n, 0, 0.9)  # [S]
    ratio = np.where(rng.random((num_steps, num_samples)) < f_target[:, None],
                     rng.uniform(0.01, 1 / 3, (num_steps, num_samples)),
                     rng.uniform(1 / 3, 1.0, (num_steps, num_samples))).astype(np.float32)
    nearest = rng.integers(0, n, (num_steps, num_samples))  # training-set positions
    memorized = ratio < 1 / 3
    dims = (names.STEP, names.SAMPLE)
    ds = xr.Dataset(
        {names.F_MEM: ((names.STEP,), memorized.mean(axis=1)),
         names.F_MEM_SE: ((names.STEP,), np.sqrt(memorized.mean(axis=1) * (1 - memorized.mean(axis=1)) / num_samples)),
         names.RATIO: (dims, ratio), names.D1: (dims, d1), names.D2: (dims, d1 / ratio),
         names.D_TEST: (dims, rng.lognormal(3.2, 0.3, (num_steps, num_samples)).astype(np.float32)),
         names.NEAREST: (dims, pool_index[nearest])},
        coords={names.STEP: steps, names.SAMPLE: np.arange(num_samples), names.N: n, names.SEED: seed})
    ds[names.F_MEM].attrs[names.RATIO_THRESHOLD] = 1 / 3
    train = rng.standard_normal((n, 8))
    ds = ds.merge(copy_statistics(nearest, memorized, steps=steps, pool_index=pool_index,
                                  train_nn_distance=rng.lognormal(3.0, 0.2, n), train=train))
    return names.annotate(ds)


def metrics_part(n: int, seed: int, *, steps: np.ndarray, rng: np.random.Generator) -> xr.Dataset:
    loss = 0.5 / np.sqrt(1 + steps / 1000)
    return names.annotate(xr.Dataset(
        {names.TRAIN_LOSS: ((names.STEP,), loss * (1 - 0.3 * rng.random())),
         names.TEST_LOSS: ((names.STEP,), loss * (1 + 0.3 * rng.random()))},
        coords={names.STEP: steps, names.N: n, names.SEED: seed},
        attrs={"state_dir": f"state/n{n}_s{seed}", "trajectory_hash": f"{n}-{seed}"}))


def synthesize(folder: Path, *, ns: list[int], seeds: int, num_steps: int, num_samples: int) -> tuple[list[str], list[str]]:
    steps = np.concatenate([[0], np.round(np.geomspace(1_000, 1_000_000, num_steps - 1))]).astype(np.int64)
    rng = np.random.default_rng(0)
    scores, metrics = [], []
    for n in ns:
        for seed in range(seeds):
            scores.append(str(folder / f"n{n}_s{seed}_scores.nc"))
            metrics.append(str(folder / f"n{n}_s{seed}_train_metrics.nc"))
            atomic_to_netcdf(scores_part(n, seed, steps=steps, num_samples=num_samples, rng=rng), scores[-1])
            atomic_to_netcdf(metrics_part(n, seed, steps=steps, rng=rng), metrics[-1])
    return scores, metrics


def run_cube(scores: list[str], metrics: list[str], out: Path, *, in_memory: bool) -> tuple[float, float]:
    """Peak RSS (MiB) and seconds of one `diffmem cube` child process, forced to one way of reading."""
    cmd = [sys.executable, "-m", "diffmem.stages.cube", "--scores", *scores, "--train-metrics", *metrics,
           "--config-hash", "bench", "--experiment", "bench", "--out", str(out),
           "--in-memory" if in_memory else "--lazy"]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, not the sum over children
    seconds = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"diffmem cube exited with {child.returncode}")
    return usage.ru_maxrss / 1024, seconds  # Linux reports KiB


def mib(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:,.1f} MiB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[128, 256, 512, 1024, 2048, 4096])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60, help="checkpoints per run")
    parser.add_argument("--samples", type=int, default=10_000, help="generated samples per checkpoint")
    parser.add_argument("--keep", default=None, help="write the files here and keep them (default: a temporary folder)")
    args = parser.parse_args(argv)
    print(f"- CPU: {cpu_model()}, {usable_cores()} usable cores; load average at start {load()}")
    print(f"- grid: n = {args.n}, {args.seeds} seeds, {args.steps} checkpoints, {args.samples:,} samples each")
    with tempfile.TemporaryDirectory(prefix="bench_cube_") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        scores, metrics = synthesize(folder, ns=args.n, seeds=args.seeds, num_steps=args.steps, num_samples=args.samples)
        inputs = sum(os.path.getsize(p) for p in scores + metrics)
        print(f"- {len(scores) + len(metrics)} per-run files, {mib(inputs)} on disk, written in "
              f"{time.perf_counter() - t0:.0f} s\n")
        rows = []
        for label, in_memory in (("--lazy, chunk by chunk (default over 64 MiB)", False),
                                  ("--in-memory (default up to 64 MiB)", True)):
            out = folder / f"cube_{'in_memory' if in_memory else 'lazy'}.nc"
            peak, seconds = run_cube(scores, metrics, out, in_memory=in_memory)
            rows.append((label, peak, seconds, out))
        with xr.open_dataset(rows[0][3], engine=NETCDF_ENGINE, chunks={}) as cube:
            in_memory_bytes = cube.nbytes
        print("| cube stage | peak RSS | seconds | cube on disk |")
        print("|---|---|---|---|")
        for label, peak, seconds, out in rows:
            print(f"| {label} | {peak:,.0f} MiB | {seconds:.0f} | {mib(os.path.getsize(out))} |")
        print(f"\ninputs on disk: {mib(inputs)}; the cube decoded in memory: {mib(in_memory_bytes)}")
        with (xr.open_dataset(rows[0][3], engine=NETCDF_ENGINE, chunks={}) as lazy,
              xr.open_dataset(rows[1][3], engine=NETCDF_ENGINE, chunks={}) as eager):
            times = ("created", "date_created", "history")
            assert {k: v for k, v in lazy.attrs.items() if k not in times} == {k: v for k, v in eager.attrs.items() if k not in times}
            for name in lazy.variables:  # one at a time: both cubes at once need twice the memory
                xr.testing.assert_identical(lazy[name].load(), eager[name].load())
        print("both cubes read back identical (values, dtypes, attributes)")


if __name__ == "__main__":
    main()
