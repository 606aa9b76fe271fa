"""Memorization per training example: which training points get copied, how often, and from when.

`copy_statistics` turns one run's per-step nearest-training indices and memorization mask into
variables on a `train_index` dimension (the i-th point of the run's training set): the number of
memorized samples copying each point at the last checkpoint, the first checkpoint at which any
sample copies it, and two measures of how isolated the point is in its training set (distance to
its nearest other training point, distance to the training-set mean). The score stage adds them
to scores.nc, so they reach the cube. Training sets are the first n points of a seeded permutation
of the pool, so train_index i is the same pool point at every n of one seed.

`isolation_correlations` measures whether isolated points (outliers) or near-duplicates are
copied first: Spearman rank correlations of the first-copy step with the two distances.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from diffmem import names


def copy_counts(nearest: np.ndarray, memorized: np.ndarray, *, n_train: int) -> np.ndarray:
    """[S, n] number of memorized samples per training point at each step, from nearest [S, M]
    (training-set indices) and the memorized mask [S, M]."""
    counts = np.zeros((nearest.shape[0], n_train), dtype=np.int64)
    for s in range(nearest.shape[0]):
        counts[s] = np.bincount(nearest[s][memorized[s]], minlength=n_train)
    return counts


def first_copy_steps(counts: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """[n] first step at which each training point has a copy (NaN: never), from counts [S, n]."""
    copied = counts > 0
    ever = copied.any(axis=0)
    first = np.asarray(steps, dtype=np.float64)[copied.argmax(axis=0)]
    return np.where(ever, first, np.nan)


def isolation(train: np.ndarray, nearest_other: np.ndarray) -> dict[str, np.ndarray]:
    """Distance of each training point to its nearest other training point (given) and to the set's mean."""
    x = np.asarray(train, dtype=np.float64).reshape(train.shape[0], -1)
    return {
        names.TRAIN_NN_DISTANCE: np.asarray(nearest_other, dtype=np.float64),
        names.TRAIN_MEAN_DISTANCE: np.linalg.norm(x - x.mean(axis=0), axis=1),
    }


def copy_statistics(nearest: np.ndarray, memorized: np.ndarray, *, steps: np.ndarray, pool_index: np.ndarray,
                    train_nn_distance: np.ndarray, train: np.ndarray) -> xr.Dataset:
    """The per-training-example variables of one run on dimension train_index (see module docstring)."""
    n_train = pool_index.shape[0]
    counts = copy_counts(nearest, memorized, n_train=n_train)  # [S, n]
    dims = (names.TRAIN_INDEX,)
    variables = {
        names.COPY_COUNT: (dims, counts[-1]),
        names.FIRST_COPY_STEP: (dims, first_copy_steps(counts, steps)),
        names.TRAIN_POOL_INDEX: (dims, np.asarray(pool_index, dtype=np.int64)),
    }
    variables.update({k: (dims, v) for k, v in isolation(train, train_nn_distance).items()})
    return xr.Dataset(variables, coords={names.TRAIN_INDEX: np.arange(n_train, dtype=np.int64)})


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank); +inf ranks last."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(values.size, dtype=np.float64)
    uniq, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / np.bincount(inverse))[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks); NaN when either is constant."""
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def isolation_correlations(first_step: np.ndarray, nn_distance: np.ndarray, mean_distance: np.ndarray) -> dict[str, float]:
    """Spearman correlation of the first-copy step (never copied ranks last) with each isolation measure.

    Negative: isolated points (outliers) are copied first; positive: crowded points / near-duplicates
    are copied first. NaN when no point (or every point) of the set is copied."""
    step = np.where(np.isnan(first_step), np.inf, first_step)
    return {
        names.TRAIN_NN_DISTANCE: spearman(step, nn_distance),
        names.TRAIN_MEAN_DISTANCE: spearman(step, mean_distance),
    }


def split_per_example(parts: list[xr.Dataset]) -> tuple[list[xr.Dataset], xr.Dataset | None]:
    """Separate the train_index variables of per-run datasets (n and seed already dimensions) from the rest.

    Runs of different n have train_index coordinates of different lengths, which combine_by_coords
    would take for a concatenation axis; stacking them (the seeds of each n, then the n with an outer
    join on train_index) puts NaN where a run's training set is smaller than the longest. The stacked
    variables are float (NaN fill) in memory; the counts and indices among them are written as integers
    (names.INTEGER_VARIABLES)."""
    rest, per_example = [], []
    for part in parts:
        if names.TRAIN_INDEX not in part.dims:
            rest.append(part)
            continue
        keep = [v for v in part.data_vars if names.TRAIN_INDEX in part[v].dims]
        ex = part[keep].astype(np.float64)
        for v in ex.variables.values():
            v.encoding = {}
        per_example.append(ex)
        rest.append(part.drop_dims(names.TRAIN_INDEX))
    if not per_example:
        return rest, None
    # each n's block is padded once; xr.merge would pad every run to the whole cube and compare the runs
    # pairwise, quadratic in their number and, on lazily opened parts, computing every comparison
    by_n: dict[int, list[xr.Dataset]] = {}
    for ex in per_example:
        by_n.setdefault(int(ex[names.N][0]), []).append(ex)
    blocks = [xr.concat(sorted(group, key=lambda ex: int(ex[names.SEED][0])), dim=names.SEED, join="outer",
                        data_vars="all", coords="minimal", combine_attrs="drop_conflicts")
              for _, group in sorted(by_n.items())]
    merged = xr.concat(blocks, dim=names.N, join="outer", data_vars="all", coords="minimal", combine_attrs="drop_conflicts")
    return rest, merged
