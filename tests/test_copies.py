"""Memorization per training example: copy counts, first copy steps, isolation, and their cube layout."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.stats import spearmanr

from diffmem import names
from diffmem.config import ScoreConfig
from diffmem.copies import copy_counts, first_copy_steps, isolation_correlations, spearman
from diffmem.cube import combine_runs
from diffmem.stages import score
from diffmem.stages.score import score_run


def test_copy_counts_and_first_step():
    nearest = np.array([[0, 1, 1, 2], [1, 1, 1, 0], [2, 2, 0, 0]])  # [S=3, M=4] training-set rows
    mem = np.array([[False, False, False, False], [True, True, False, True], [True, False, True, True]])
    counts = copy_counts(nearest, mem, n_train=4)
    np.testing.assert_array_equal(counts, [[0, 0, 0, 0], [1, 2, 0, 0], [2, 0, 1, 0]])
    first = first_copy_steps(counts, np.array([0, 10, 100]))
    np.testing.assert_array_equal(first[:3], [10, 10, 100])
    assert np.isnan(first[3])  # never copied


def test_spearman_matches_scipy_with_ties_and_never():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=40).astype(float)
    y = rng.standard_normal(40)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    step = np.where(rng.random(40) < 0.3, np.inf, x)
    finite_equiv = np.where(np.isinf(step), 1e9, step)
    assert spearman(step, y) == pytest.approx(spearmanr(finite_equiv, y).statistic)


def test_isolation_correlation_sign():
    # isolated points copied first: first step falls as the distance grows -> negative
    dist = np.linspace(0.1, 2.0, 20)
    first = np.where(dist > 1.5, 10.0, np.where(dist > 1.0, 100.0, np.nan))
    rho = isolation_correlations(first, dist, dist)
    assert rho[names.TRAIN_NN_DISTANCE] < -0.8
    assert np.isnan(isolation_correlations(np.full(5, np.nan), dist[:5], dist[:5])[names.TRAIN_NN_DISTANCE])


def _run(tmp_path, *, n, seed, train, samples_by_step):
    tmp_path.mkdir(parents=True, exist_ok=True)
    files = {}
    for step, x in samples_by_step.items():
        path = tmp_path / f"n{n}_s{seed}_step{step}.npy"
        np.save(path, x.astype(np.float32))
        files[str(step)] = str(path)
    manifest = {"n": n, "seed": seed, "steps": sorted(samples_by_step), "files": files}
    pool_index = np.arange(n) * 3 + seed  # any distinct pool indices
    test = np.random.default_rng(1).standard_normal((10, train.shape[1])).astype(np.float32)
    return score_run(manifest, train, pool_index, test, cfg=ScoreConfig(num_bootstrap=5), device="cpu",
                     log=lambda m: None)


def test_score_run_records_planted_copies_and_the_cube_pads_by_n(tmp_path):
    rng = np.random.default_rng(0)
    big = (rng.standard_normal((8, 5)) * 3).astype(np.float32)
    runs = []
    for n in (4, 8):
        train = big[:n]
        far = rng.standard_normal((6, 5)).astype(np.float32) * 0.1 + 20.0  # far from every training point
        early, late = far.copy(), far.copy()
        late[0], late[1], late[2] = train[1], train[1], train[2]  # planted copies at step 100
        early[3] = train[2]  # point 2 is copied already at step 10
        ds = _run(tmp_path, n=n, seed=0, train=train, samples_by_step={10: early, 100: late})
        np.testing.assert_array_equal(ds[names.COPY_COUNT].values[:3], [0, 2, 1])
        assert ds[names.FIRST_COPY_STEP].values[2] == 10 and ds[names.FIRST_COPY_STEP].values[1] == 100
        assert np.isnan(ds[names.FIRST_COPY_STEP].values[0])
        np.testing.assert_array_equal(ds[names.TRAIN_POOL_INDEX].values, np.arange(n) * 3)
        runs.append(ds)
    cube = combine_runs(runs, attrs={})
    assert cube[names.COPY_COUNT].dims == (names.N, names.SEED, names.TRAIN_INDEX)
    assert cube[names.F_MEM].dims == (names.N, names.SEED, names.STEP)  # not broadcast over train_index
    small = cube[names.COPY_COUNT].sel({names.N: 4, names.SEED: 0}).values
    assert np.isnan(small[4:]).all() and not np.isnan(small[:4]).any()
    path = tmp_path / "cube.nc"
    cube.to_netcdf(path, engine="h5netcdf")
    with xr.open_dataset(path, engine="h5netcdf") as back:
        xr.testing.assert_identical(back.load(), cube)


def test_score_run_searches_checkpoints_together_without_changing_a_number(tmp_path, monkeypatch):
    # the samples of several uncached checkpoints go to one distance search (score.GROUP_BYTES): every
    # number equals that of one search per checkpoint, and that of a rerun from the cached distances
    rng = np.random.default_rng(3)
    train = rng.standard_normal((12, 6)).astype(np.float32)
    samples = {step: np.concatenate([train[rng.integers(0, 12, 20)] + 1e-3 * rng.standard_normal((20, 6)),
                                     rng.standard_normal((30, 6))]) for step in (0, 10, 100, 1000)}
    together = _run(tmp_path / "together", n=12, seed=0, train=train, samples_by_step=samples)
    cached = _run(tmp_path / "together", n=12, seed=0, train=train, samples_by_step=samples)
    monkeypatch.setattr(score, "GROUP_BYTES", 1)  # one checkpoint per search
    alone = _run(tmp_path / "alone", n=12, seed=0, train=train, samples_by_step=samples)
    xr.testing.assert_identical(together, alone)
    xr.testing.assert_identical(together, cached)
    assert together[names.F_MEM].values[-1] > 0.3
