import numpy as np
import pytest

from diffmem import data as data_module
from diffmem.config import ConfigError, DataConfig
from diffmem.data import digits_file, load_digits_array, prepare_dataset, subset_indices


def test_digits_range_split_and_shape():
    ds = prepare_dataset(DataConfig(dataset="digits", n_test=297))
    assert ds.pool.shape == (1500, 64) and ds.test.shape == (297, 64)
    assert ds.pool.min() >= -1 and ds.pool.max() <= 1
    assert ds.image_shape == (1, 8, 8)
    # test split disjoint from the pool (rows are unique images up to duplicates in the data)
    pool_rows = {r.tobytes() for r in ds.pool}
    overlap = sum(r.tobytes() in pool_rows for r in ds.test)
    assert overlap <= 2  # digits contains a couple of exact duplicate images


def test_digits_read_from_scikit_learns_file_equal_load_digits_and_without_it_come_through_it(monkeypatch):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    want = (bunch.data.astype(np.float32) / 8.0 - 1.0, bunch.target.astype(np.int64))
    assert digits_file() is not None  # the file is where scikit-learn keeps it
    got = load_digits_array()
    assert all(np.array_equal(g, w) and g.dtype == w.dtype for g, w in zip(got, want))
    monkeypatch.setattr(data_module, "DIGITS_FILE", ("datasets", "data", "no_such_file.csv.gz"))
    assert digits_file() is None
    fallback = load_digits_array()
    assert all(np.array_equal(g, w) and g.dtype == w.dtype for g, w in zip(fallback, want))


def test_subsets_nested_across_n_and_differ_across_seeds():
    a = subset_indices(1000, n=64, seed=3)
    b = subset_indices(1000, n=256, seed=3)
    assert np.array_equal(b[:64], a)
    assert not np.array_equal(subset_indices(1000, n=64, seed=4), a)
    assert len(np.unique(b)) == 256


def test_subset_larger_than_pool_fails():
    with pytest.raises(ConfigError, match="larger than the pool"):
        subset_indices(100, n=101, seed=0)


def test_gmm_and_gaussian_statistics():
    g = prepare_dataset(DataConfig(dataset="gmm", dim=4, pool_size=4000, n_test=100, gmm_mu=2.0))
    assert g.pool.shape == (4000, 4)
    assert abs(np.abs(g.pool.mean(axis=1)).mean() - 2.0) < 0.3
    z = prepare_dataset(DataConfig(dataset="gaussian", dim=8, pool_size=4000, n_test=100))
    assert np.allclose(z.pool.std(axis=0), 1, atol=0.06)


def test_npy_image_array_and_non_finite(tmp_path):
    arr = np.random.default_rng(0).normal(size=(50, 1, 4, 4)).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, arr)
    ds = prepare_dataset(DataConfig(dataset="npy", path=str(path), n_test=10))
    assert ds.pool.shape == (40, 16) and ds.image_shape == (1, 4, 4)
    arr[7, 0, 1, 1] = np.nan
    np.save(path, arr)
    with pytest.raises(ConfigError, match="non-finite"):
        prepare_dataset(DataConfig(dataset="npy", path=str(path), n_test=10))
