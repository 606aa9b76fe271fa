"""quality.baselines: the per-run FD of held-out data and of the resampled training set against the reference."""

from __future__ import annotations

import numpy as np

from diffmem.data import Dataset
from diffmem.metrics import distances
from diffmem.stages.quality import Featurizer, baseline_fds, heldout_points


def _dataset(rng: np.random.Generator) -> Dataset:
    pool = rng.normal(size=(300, 4)).astype(np.float32)
    test = rng.normal(size=(200, 4)).astype(np.float32)
    return Dataset(pool=pool, test=test, pool_labels=None, test_labels=None, image_shape=None)


def test_heldout_points_are_the_pool_outside_the_training_set():
    ds = _dataset(np.random.default_rng(0))
    train_indices = np.array([3, 7, 11, 250])
    held = heldout_points(ds, None, train_indices=train_indices, num=50, rng=np.random.default_rng(1))
    assert held.shape == (296, 4)
    train_rows = {ds.pool[i].tobytes() for i in train_indices}
    assert not any(row.tobytes() in train_rows for row in held)


def test_a_memorizer_of_a_small_training_set_scores_worse_than_held_out_data():
    rng = np.random.default_rng(2)
    ds = _dataset(rng)
    featurize = Featurizer(["data"], image_shape=None)
    ref_feats = {"data": featurize("data", ds.test)}
    train_indices = np.arange(5)  # five points: draws from them cover the distribution badly
    held = heldout_points(ds, None, train_indices=train_indices, num=200, rng=rng)
    out = baseline_fds(train=ds.pool[train_indices], heldout=held, num=200, ref_feats=ref_feats,
                       featurize=featurize, rng=np.random.default_rng(3))
    assert set(out) == {"fd_data_heldout", "fd_data_train"}
    assert out["fd_data_heldout"] < 0.2 < out["fd_data_train"]
    # the held-out FD is the FD of `num` of those points, no more
    again = np.random.default_rng(3)
    take = held[again.permutation(held.shape[0])[:200]]
    assert np.isclose(out["fd_data_heldout"], distances.frechet_distance(take, ref_feats["data"]))
