"""Datasets, the fixed held-out split and nested training subsets.

`prepare_dataset(cfg)` returns the pool (candidates for training) and a held-out test split that is
disjoint from every training set. `subsample(pool, n=..., seed=...)` takes the first n points of a
permutation seeded by `seed`, so the training sets of one seed are nested across n.

The stages that write these files are in `diffmem.stages.data`.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffmem.config import IMAGE_DATASETS, ConfigError, DataConfig
from diffmem.images import load_image_dataset
from diffmem.io import atomic_savez

# datasets of pixels, which data.pixel_scale puts in [-1, 1] or [0, 1]
PIXEL_DATASETS = ("digits", *IMAGE_DATASETS)


@dataclass(frozen=True)
class Dataset:
    pool: np.ndarray  # [N_pool, D] float32, flattened
    test: np.ndarray  # [N_test, D]
    pool_labels: np.ndarray | None  # [N_pool] int or None
    test_labels: np.ndarray | None
    image_shape: tuple[int, ...] | None  # (C, H, W) or None


# the file scikit-learn ships its 8x8 digits in, inside its package (sklearn/datasets/data/)
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")


def digits_file() -> Path | None:
    """scikit-learn's digits.csv.gz, found without importing scikit-learn; None where it is not there."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*DIGITS_FILE)
    return path if path.is_file() else None


def load_digits_array() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1,797 images) scaled from [0, 16] to [-1, 1].

    Read from the file scikit-learn ships, as `sklearn.datasets.load_digits` reads it (np.loadtxt of the
    gzipped CSV, the label in the last column), without importing scikit-learn, whose import took 1.9 s of
    the 3.3 s the default run's first job took (tests/test_data.py holds the two equal); through
    `load_digits` where the file is not where scikit-learn keeps it."""
    path = digits_file()
    if path is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        data, target = bunch.data, bunch.target
    else:
        with gzip.open(path, mode="rt", encoding="utf-8") as fh:
            table = np.loadtxt(fh, delimiter=",")
        data, target = table[:, :-1], table[:, -1].astype(int)
    x = data.astype(np.float32) / 8.0 - 1.0  # [1797, 64]
    return x, target.astype(np.int64)


def gmm_sample(num: int, *, dim: int, mu: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """0.5 N(+mu 1_d, I) + 0.5 N(-mu 1_d, I), the synthetic data of arXiv 2505.17638."""
    labels = rng.integers(0, 2, size=num)
    signs = np.where(labels == 1, 1.0, -1.0)[:, None]
    x = signs * mu + rng.standard_normal((num, dim))
    return x.astype(np.float32), labels.astype(np.int64)


def load_npy(path: str, *, scale_to_unit: bool) -> tuple[np.ndarray, tuple[int, ...] | None]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"data error: npy file {p} does not exist")
    arr = np.load(p)
    if arr.ndim not in (2, 4):
        raise ConfigError(f"data error: {p} has shape {arr.shape}; expected N x D or N x C x H x W")
    shape = tuple(int(s) for s in arr.shape[1:]) if arr.ndim == 4 else None
    x = arr.reshape(arr.shape[0], -1).astype(np.float32)
    if scale_to_unit:
        lo, hi = float(x.min()), float(x.max())
        if hi <= lo:
            raise ConfigError(f"data error: {p} is constant; cannot rescale to [-1, 1]")
        x = 2 * (x - lo) / (hi - lo) - 1
    return x, shape


def prepare_dataset(cfg: DataConfig) -> Dataset:
    """Build the pool and the fixed test split for a data config."""
    rng = np.random.default_rng(cfg.split_seed)
    labels = None
    shape = tuple(cfg.image_shape) if cfg.image_shape else None
    if cfg.dataset == "digits":
        x, labels = load_digits_array()
        shape = shape or (1, 8, 8)
    elif cfg.dataset == "gmm":
        x, labels = gmm_sample(cfg.pool_size + cfg.n_test, dim=cfg.dim, mu=cfg.gmm_mu, rng=rng)
    elif cfg.dataset == "gaussian":
        x = rng.standard_normal((cfg.pool_size + cfg.n_test, cfg.dim)).astype(np.float32)
    elif cfg.dataset == "npy":
        if not cfg.path:
            raise ConfigError("config error at 'data.path': dataset 'npy' needs a path")
        x, npy_shape = load_npy(cfg.path, scale_to_unit=cfg.scale_to_unit)
        shape = shape or npy_shape
    elif cfg.dataset in IMAGE_DATASETS:
        images, labels = load_image_dataset(cfg)  # [N, C, H, W] in [-1, 1]
        if shape is not None and tuple(shape) != images.shape[1:]:
            raise ConfigError(f"config error at 'data.image_shape': {shape} does not match the images' "
                              f"{tuple(images.shape[1:])} (leave it unset for image datasets)")
        shape = tuple(int(s) for s in images.shape[1:])
        x = images.reshape(images.shape[0], -1)
    else:
        raise ConfigError(f"config error at 'data.dataset': unknown dataset {cfg.dataset!r}")
    if cfg.pixel_scale == "unit" and cfg.dataset in PIXEL_DATASETS:  # [-1, 1] -> [0, 1]
        x = ((x + 1) / 2).astype(x.dtype, copy=False)
    if not np.all(np.isfinite(x)):
        bad = int(np.argwhere(~np.isfinite(x))[0, 0])
        raise ConfigError(f"data error: dataset {cfg.dataset!r} has a non-finite value (first in row {bad})")
    if shape is not None and int(np.prod(shape)) != x.shape[1]:
        raise ConfigError(f"config error at 'data.image_shape': {shape} does not match dimension {x.shape[1]}")
    if cfg.n_test >= x.shape[0]:
        raise ConfigError(f"config error at 'data.n_test': {cfg.n_test} leaves no pool out of {x.shape[0]} points")
    order = rng.permutation(x.shape[0])
    test_idx, pool_idx = order[: cfg.n_test], order[cfg.n_test :]
    return Dataset(
        pool=x[pool_idx],
        test=x[test_idx],
        pool_labels=None if labels is None else labels[pool_idx],
        test_labels=None if labels is None else labels[test_idx],
        image_shape=shape,
    )


def subset_indices(pool_size: int, *, n: int, seed: int, twin: bool = False) -> np.ndarray:
    """Indices of the training set of size n: the first n of a permutation seeded by `seed`.

    twin: the last n of the same permutation, last first (disjoint from the first n while 2n <= pool
    size, and nested across n like the first n): the training set of the twin model (twin.py)."""
    if n > pool_size:
        raise ConfigError(f"config error: n = {n} is larger than the pool of {pool_size} points")
    if twin and 2 * n > pool_size:
        raise ConfigError(f"config error at 'data.twin': the twin of n = {n} needs 2 x {n} = {2 * n} pool points, "
                          f"the pool has {pool_size}")
    perm = np.random.default_rng([seed, 0x5EED]).permutation(pool_size)
    return perm[::-1][:n] if twin else perm[:n]


def save_dataset(ds: Dataset, path: str | Path) -> None:
    arrays = {"pool": ds.pool, "test": ds.test}
    if ds.pool_labels is not None:
        arrays["pool_labels"] = ds.pool_labels
        arrays["test_labels"] = ds.test_labels
    if ds.image_shape is not None:
        arrays["image_shape"] = np.asarray(ds.image_shape, dtype=np.int64)
    atomic_savez(path, **arrays)


def load_dataset(path: str | Path) -> Dataset:
    with np.load(path) as f:
        shape = tuple(int(s) for s in f["image_shape"]) if "image_shape" in f else None
        return Dataset(
            pool=f["pool"],
            test=f["test"],
            pool_labels=f["pool_labels"] if "pool_labels" in f else None,
            test_labels=f["test_labels"] if "test_labels" in f else None,
            image_shape=shape,
        )


def load_train(path: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[int, ...] | None]:
    """Load a training subset file: (x [n, D], pool indices [n], image shape or None)."""
    with np.load(path) as f:
        shape = tuple(int(s) for s in f["image_shape"]) if "image_shape" in f else None
        return f["x"], f["indices"], shape

