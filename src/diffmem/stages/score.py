"""Scoring stage: memorization scores of every checkpoint's samples for one (n, seed) run.

Writes `scores.nc` with per-sample d1, d2, ratio = d1/d2, nearest training index and the distance
to the nearest held-out test point (dims step, sample), and f_mem with its bootstrap standard
error (dim step), and per training example (dim train_index, src/diffmem/copies.py) how many
memorized samples copy it at the last checkpoint, from which step it is copied and how isolated it
is in its training set. Distances are cached beside the samples, so a new `ratio_threshold` or a raised
`max_steps` only recomputes what changed.

Several runs in one process (the workflow's grouped evaluation, `train.group_evaluation`): give
--samples, --train and --out one entry per run; each run is scored as alone.

Run: `diffmem score --samples samples.json --train train.npz --dataset dataset.npz
--score-cfg '<json>' --out scores.nc`
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from diffmem import names
from diffmem.config import ConfigError, ScoreConfig, read_slice
from diffmem.copies import copy_statistics
from diffmem.data import load_dataset, load_train
from diffmem.gpus import select_device
from diffmem.heap import keep_freed_memory
from diffmem.io import atomic_to_netcdf, fail
from diffmem.log import configure
from diffmem.scoring import distance_ratio, fraction_with_se, memorized, nearest_neighbors
from diffmem.stages import add_run_settings, one_per_run, stage_parser

DIST_VERSION = 1
log = logging.getLogger(__name__)


def step_distances(samples: np.ndarray, train: np.ndarray, test: np.ndarray, *, cfg: ScoreConfig,
                   device) -> dict[str, np.ndarray]:
    (d_train, i_train) = nearest_neighbors(samples, train, k=2, chunk_size=cfg.chunk_size, device=device)
    (d_test, _) = nearest_neighbors(samples, test, k=1, chunk_size=cfg.chunk_size, device=device)
    return {"d1": d_train[:, 0], "d2": d_train[:, 1], "nearest": i_train[:, 0], "d_test": d_test[:, 0]}


# the samples of consecutive uncached checkpoints go to one distance search up to this size: the search's
# per-call work (the reference's centring, norms and error bound) is paid once per group, not per checkpoint
GROUP_BYTES = 64 << 20


def score_run(manifest: dict, train: np.ndarray, pool_index: np.ndarray, test: np.ndarray, *, cfg: ScoreConfig,
              device, log: Callable[[str], None] = log.info) -> xr.Dataset:
    steps = [int(s) for s in manifest["steps"]]
    by_step: dict[int, dict[str, np.ndarray]] = {}
    group: list[tuple[int, np.ndarray, Path]] = []  # (step, samples, cache) waiting for their distances
    computed, t0 = 0, time.perf_counter()

    def flush() -> None:
        # each row's neighbours are exact (the float64 recheck) and found row by row, so several checkpoints'
        # samples searched at once get the distances and indices each checkpoint gets alone (checked bit for bit
        # on the default run; only exactly equidistant reference points, duplicates, could come in another order)
        if not group:
            return
        dist = step_distances(np.concatenate([x for _, x, _ in group]), train, test, cfg=cfg, device=device)
        start = 0
        for step, x, cache in group:
            part = {k: v[start : start + x.shape[0]] for k, v in dist.items()}
            start += x.shape[0]
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, **part)
            tmp.replace(cache)
            by_step[step] = part
        group.clear()

    for step in steps:
        sample_file = Path(manifest["files"][str(step)])
        cache = sample_file.with_name(sample_file.stem + f".dist{DIST_VERSION}.npz")
        if cache.exists():
            with np.load(cache) as f:
                by_step[step] = {k: f[k] for k in f.files}
            continue
        samples = np.load(sample_file)
        if group and sum(x.nbytes for _, x, _ in group) + samples.nbytes > GROUP_BYTES:
            flush()
        group.append((step, samples, cache))
        computed += 1
    flush()
    per_step = [by_step[step] for step in steps]
    log(f"distances: {computed} computed, {len(steps) - computed} cached "
        f"({time.perf_counter() - t0:.1f} s)")
    d1 = np.stack([d["d1"] for d in per_step])  # [S, M]
    d2 = np.stack([d["d2"] for d in per_step])
    ratio = distance_ratio(d1, d2)
    mask = memorized(d1, d2, ratio_threshold=cfg.ratio_threshold)
    rng = np.random.default_rng(0)
    f, se = zip(*(fraction_with_se(m, num_bootstrap=cfg.num_bootstrap, rng=rng) for m in mask))
    dims = (names.STEP, names.SAMPLE)
    ds = xr.Dataset(
        {
            names.F_MEM: ((names.STEP,), np.array(f)),
            names.F_MEM_SE: ((names.STEP,), np.array(se)),
            names.RATIO: (dims, ratio.astype(np.float32)),
            names.D1: (dims, d1.astype(np.float32)),
            names.D2: (dims, d2.astype(np.float32)),
            names.D_TEST: (dims, np.stack([d["d_test"] for d in per_step]).astype(np.float32)),
            names.NEAREST: (dims, pool_index[np.stack([d["nearest"] for d in per_step])].astype(np.int64)),
        },
        coords={
            names.STEP: np.array(steps, dtype=np.int64),
            names.SAMPLE: np.arange(d1.shape[1], dtype=np.int64),
            names.N: int(manifest["n"]),
            names.SEED: int(manifest["seed"]),
        },
    )
    ds[names.F_MEM].attrs[names.RATIO_THRESHOLD] = cfg.ratio_threshold
    # per training example (dim train_index): copies at the last checkpoint, first copy step, isolation
    train_nn = nearest_neighbors(train, train, k=2, chunk_size=cfg.chunk_size, device=device)[0][:, 1]
    ds = ds.merge(copy_statistics(np.stack([d["nearest"] for d in per_step]), mask, steps=np.array(steps),
                                  pool_index=pool_index, train_nn_distance=train_nn, train=train))
    return names.annotate(ds)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem score", __doc__, "diffmem.stages.score")
    parser.add_argument("--samples", nargs="+", required=True,
                        help="samples.json manifest (several: one per run, scored one after another)")
    parser.add_argument("--train", nargs="+", required=True, help="training subset .npz of each run")
    parser.add_argument("--dataset", required=True, help="dataset .npz (for the test split)")
    parser.add_argument("--score-cfg", required=True, help="score config slice (JSON or path)")
    add_run_settings(parser)
    parser.add_argument("--out", nargs="+", required=True, help="scores.nc of each run")
    args = parser.parse_args(argv)
    one_per_run("diffmem score", samples=args.samples, train=args.train, out=args.out)
    try:
        cfg = ScoreConfig.from_dict(read_slice("score", args.score_cfg, args.run_settings))
    except ConfigError as exc:
        fail(str(exc))
    log.debug(f"{cfg}")
    keep_freed_memory()  # the distance search's [chunk, R] blocks reuse the heap instead of faulting pages in anew
    test = load_dataset(args.dataset).test
    try:
        device, _gpu_lease = select_device(cfg.device)  # the lease holds this job's GPU until exit
    except RuntimeError as exc:
        fail(str(exc))
    for samples, train_file, out in zip(args.samples, args.train, args.out):
        manifest = json.loads(Path(samples).read_text())
        train, pool_index, _ = load_train(train_file)
        label = f"n={manifest['n']} seed={manifest['seed']}"
        ds = score_run(manifest, train, pool_index, test, cfg=cfg, device=device,
                       log=lambda line, label=label: log.info(f"{label}: {line}"))
        f = ds[names.F_MEM].values
        log.info(f"{label}: f_mem from {f[0]:.3f} to {f[-1]:.3f} over {f.size} checkpoints")
        atomic_to_netcdf(ds, out)


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
