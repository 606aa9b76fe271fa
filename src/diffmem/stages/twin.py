"""The twin-model test of Kadkhodaie, Guth, Simoncelli & Mallat (ICLR 2024).

With `data.twin: true`, every (n, seed) run gets a twin: a second model trained on a training set
of the same size n that is disjoint from the run's own (the last n points of the same seeded pool
permutation whose first n points are the run's set; nested across n, like the run's). The twin is
an ordinary run of the workflow: the experiment `<name>/twin` (results/<name>/twin/), whose seed
s + TWIN_SEED_OFFSET gives it its own initialisation and batch order, trained and sampled by the
normal rules. Sampling uses per-sample seeds (sample.noise_seed), so sample i of both models starts
from the same initial noise.

Per checkpoint step the comparison stage records, for each sample i, the distance between the two
models' samples d_AB = ||x_A - x_B|| and the twin's distance to its own nearest training point d1_B,
and the fraction of pairs closer to each other than either is to its own nearest training point
(d_AB < min(d1_A, d1_B)). Memorizing models reproduce different training points (fraction near 0);
generalizing models produce nearly the same sample from the same noise, away from both training
sets (fraction near 1). No feature network is needed.

Run: `diffmem twin --samples a/samples.json --twin-samples b/samples.json --train a/train.npz
--twin-train b/train.npz --out twin.nc` and `diffmem twin-figure --cube cube.nc --out twin.png`
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from diffmem import names
from diffmem.config import schema_default
from diffmem.data import load_train
from diffmem.figures.twin import make_twin_figure
from diffmem.io import NETCDF_ENGINE, atomic_to_netcdf, fail
from diffmem.log import configure
from diffmem.scoring import nearest_neighbors
from diffmem.stages import stage_parser

log = logging.getLogger(__name__)


def pair_distances(samples: np.ndarray, twin_samples: np.ndarray, d1: np.ndarray, twin_d1: np.ndarray) -> dict:
    """Per pair: d_AB, and whether the pair is closer to each other than either is to its own
    nearest training point; with the fraction of such pairs."""
    a = np.asarray(samples, dtype=np.float64).reshape(samples.shape[0], -1)
    b = np.asarray(twin_samples, dtype=np.float64).reshape(twin_samples.shape[0], -1)
    if a.shape != b.shape:
        raise ValueError(f"the model and its twin have samples of shapes {a.shape} and {b.shape}")
    d_ab = np.linalg.norm(a - b, axis=1)
    closer = d_ab < np.minimum(d1, twin_d1)
    return {"distance": d_ab, "closer": closer, "fraction": float(closer.mean())}


def compare_runs(manifest: dict, twin_manifest: dict, train: np.ndarray, twin_train: np.ndarray, *,
                 chunk_size: int | None = None, log: Callable[[str], None] = log.info) -> xr.Dataset:
    """twin_distance, twin_d1 (step, sample) and twin_closer (step) of one (n, seed) run and its twin.

    chunk_size: queries per distance block (None: the score stage's default, score.chunk_size)."""
    chunk_size = schema_default("score", "chunk_size") if chunk_size is None else chunk_size
    steps = [int(s) for s in manifest["steps"] if str(int(s)) in twin_manifest["files"]]
    if not steps:
        raise ValueError("the run and its twin have no checkpoint step in common")
    dist, d1b, frac = [], [], []
    for step in steps:
        xa = np.load(manifest["files"][str(step)])
        xb = np.load(twin_manifest["files"][str(step)])
        d1_a = nearest_neighbors(xa, train, k=1, chunk_size=chunk_size)[0][:, 0]
        d1_b = nearest_neighbors(xb, twin_train, k=1, chunk_size=chunk_size)[0][:, 0]
        pair = pair_distances(xa, xb, d1_a, d1_b)
        dist.append(pair["distance"])
        d1b.append(d1_b)
        frac.append(pair["fraction"])
    log(f"n={manifest['n']} seed={manifest['seed']}: fraction of pairs closer to each other than to "
        f"their training sets from {frac[0]:.3f} (step {steps[0]}) to {frac[-1]:.3f} (step {steps[-1]})")
    dims = (names.STEP, names.SAMPLE)
    ds = xr.Dataset(
        {
            names.TWIN_DISTANCE: (dims, np.stack(dist).astype(np.float32)),
            names.TWIN_D1: (dims, np.stack(d1b).astype(np.float32)),
            names.TWIN_CLOSER: ((names.STEP,), np.array(frac)),
        },
        coords={
            names.STEP: np.array(steps, dtype=np.int64),
            names.SAMPLE: np.arange(len(dist[0]), dtype=np.int64),
            names.N: int(manifest["n"]),
            names.SEED: int(manifest["seed"]),
        },
    )
    return names.annotate(ds)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem twin", __doc__, "diffmem.stages.twin")
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="per-step distances between a run's samples and its twin's")
    c.add_argument("--samples", required=True)
    c.add_argument("--twin-samples", required=True)
    c.add_argument("--train", required=True)
    c.add_argument("--twin-train", required=True)
    c.add_argument("--out", required=True)
    p = sub.add_parser("plot", help="twin.png from the cube")
    p.add_argument("--cube", required=True)
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "compare":
        manifest = json.loads(Path(args.samples).read_text())
        twin_manifest = json.loads(Path(args.twin_samples).read_text())
        train, index, _ = load_train(args.train)
        twin_train, twin_index, _ = load_train(args.twin_train)
        if train.shape != twin_train.shape:
            fail(f"the twin's training set has shape {twin_train.shape}, the run's {train.shape} (same n expected)")
        shared = np.intersect1d(index, twin_index)
        if shared.size:
            fail(f"the run's and the twin's training sets share {shared.size} pool points (not disjoint)")
        try:
            ds = compare_runs(manifest, twin_manifest, train, twin_train)
        except ValueError as exc:
            fail(str(exc))
        atomic_to_netcdf(ds, args.out)
        return
    with xr.open_dataset(args.cube, engine=NETCDF_ENGINE) as ds:
        if names.TWIN_CLOSER not in ds:
            fail(f"{args.cube} has no twin-model variables (set data.twin: true and rerun)")
        keep = [v for v in (names.TWIN_CLOSER, names.TWIN_DISTANCE, names.D1) if v in ds]
        cube = ds[keep].load()
    make_twin_figure(cube, args.out, title=args.title)
    log.info(f"figure -> {args.out}")


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
