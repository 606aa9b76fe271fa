"""Twin-model test: disjoint twin subsets, the twin experiments, the same initial noise, pair distances."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from test_figures import assert_curves, bars, curves, legend, seed_means, xy

from diffmem import names
from diffmem.config import TWIN_SEED_OFFSET, ConfigError, SampleConfig, twin_experiments, validate_config
from diffmem.data import subset_indices
from diffmem.figures import twin as twin_figures
from diffmem.figures.twin import make_twin_figure
from diffmem.generation import generate
from diffmem.stages.twin import compare_runs, pair_distances


def test_twin_subsets_are_disjoint_nested_and_the_same_size():
    for seed in (0, 3):
        own = {n: subset_indices(100, n=n, seed=seed) for n in (10, 50)}
        twin = {n: subset_indices(100, n=n, seed=seed, twin=True) for n in (10, 50)}
        for n in (10, 50):
            assert twin[n].size == n and np.intersect1d(own[n], twin[n]).size == 0
        np.testing.assert_array_equal(twin[50][:10], twin[10])  # nested across n, like the run's own sets
    with pytest.raises(ConfigError, match="2 x 51 = 102 pool points"):
        subset_indices(100, n=51, seed=0, twin=True)


def test_config_rejects_a_pool_too_small_for_the_twin():
    raw = {"experiments": {"e": {"data": {"dataset": "digits", "n_train": [16, 800], "seeds": [0], "twin": True}}}}
    with pytest.raises(ConfigError, match=r"experiments\.e\.data\.twin'.*2 x 800 = 1600 points, but the pool has 1500"):
        validate_config(raw)
    raw["experiments"]["e"]["data"]["n_train"] = [16, 700]
    cfg = validate_config(raw)
    twins = twin_experiments(cfg["experiments"])
    assert list(twins) == ["e/twin"]
    assert twins["e/twin"]["data"]["seeds"] == [TWIN_SEED_OFFSET] and twins["e/twin"]["data"]["twin"] is False
    assert cfg["experiments"]["e"]["data"]["seeds"] == [0]  # the run's own config is untouched


def test_both_models_start_from_the_same_noise():
    # generate() draws its noise from the sample config alone (per-sample seeds), not from the model or the
    # run: two models with different weights and batch sizes see the same initial x at sigma_max
    import torch

    cfg = SampleConfig(num_samples=6, num_steps=4, batch_size=4)

    class Recorder(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(scale))
            self.first_inputs = []

        def forward(self, x, sigma):
            if float(sigma.flatten()[0]) == cfg.sigma_max:
                self.first_inputs.append(x.detach().clone())
            return torch.tanh(self.scale * x)

    a, b = Recorder(1.0), Recorder(-2.0)
    xa = generate(a, cfg, data_shape=(3,), device="cpu")
    xb = generate(b, SampleConfig(num_samples=6, num_steps=4, batch_size=6), data_shape=(3,), device="cpu")
    assert not np.allclose(xa, xb)  # different models, different samples ...
    za, zb = torch.cat(a.first_inputs), torch.cat(b.first_inputs)
    assert za.shape == (6, 3)
    torch.testing.assert_close(za, zb)  # ... from the same initial noise
    c = Recorder(1.0)
    generate(c, SampleConfig(num_samples=6, num_steps=4, noise_seed=1), data_shape=(3,), device="cpu")
    assert not torch.allclose(torch.cat(c.first_inputs), za)


def test_pair_distances_separate_copies_from_agreement():
    train_a, train_b = np.zeros((1, 2)), np.full((1, 2), 10.0)
    same = np.array([[5.0, 5.0], [4.0, 6.0]])
    agree = pair_distances(same, same + 0.1, np.linalg.norm(same - train_a, axis=1),
                           np.linalg.norm(same + 0.1 - train_b, axis=1))
    assert agree["fraction"] == 1.0
    copies_a, copies_b = np.zeros((2, 2)) + 0.01, np.full((2, 2), 10.0) - 0.01
    apart = pair_distances(copies_a, copies_b, np.linalg.norm(copies_a - train_a, axis=1),
                           np.linalg.norm(copies_b - train_b, axis=1))
    assert apart["fraction"] == 0.0


def _manifest(tmp_path, tag, steps, arrays):
    files = {}
    for step, x in zip(steps, arrays):
        files[str(step)] = str(tmp_path / f"{tag}{step}.npy")
        np.save(files[str(step)], x.astype(np.float32))
    return {"n": 4, "seed": 0, "steps": steps, "files": files}


def test_compare_runs_and_figure(tmp_path, drawn):
    rng = np.random.default_rng(0)
    train_a, train_b = rng.standard_normal((4, 6)), rng.standard_normal((4, 6)) + 5
    common = rng.standard_normal((10, 6)) * 0.01 + 2.5  # both models produce it: between the two sets
    early_a, early_b = common, common + 0.001
    late_a, late_b = train_a[np.arange(10) % 4], train_b[np.arange(10) % 4]  # each copies its own set
    a = _manifest(tmp_path, "a", [10, 100], [early_a, late_a])
    b = _manifest(tmp_path, "b", [10, 100, 1000], [early_b, late_b, late_b])  # extra twin step is ignored
    ds = compare_runs(a, b, train_a, train_b, log=lambda m: None)
    np.testing.assert_array_equal(ds[names.STEP].values, [10, 100])
    np.testing.assert_allclose(ds[names.TWIN_CLOSER].values, [1.0, 0.0])
    assert ds[names.TWIN_DISTANCE].dims == (names.STEP, names.SAMPLE)
    cube = ds.expand_dims({names.N: [4], names.SEED: [0]})
    cube[names.D1] = xr.full_like(cube[names.TWIN_D1], 0.5)
    figs = drawn.watch(twin_figures)
    out = make_twin_figure(cube, tmp_path / "twin.png", title="t")
    assert out.exists() and list(figs) == ["twin.png"]
    check_twin_figure(figs["twin.png"], cube)
    # the fraction is 1 at step 10 (both models draw the same points), 0 at 100 (each copies its own set)
    assert [xy(line)[1].tolist() for line in bars(figs["twin.png"].axes[1])] == [[1.0], [0.0]]


def check_twin_figure(fig, cube: xr.Dataset) -> None:
    """The fraction of twin pairs closer to each other than to their training sets against step per n
    (mean over seeds), against n at the first, middle and last step, and median d_AB / median d1."""
    ax, ax2, ax3 = fig.axes
    ns = cube[names.N].values
    assert_curves(curves(ax), [seed_means(cube[names.TWIN_CLOSER], n) for n in ns])
    assert legend(ax) == [str(n) for n in ns]
    steps = cube[names.STEP].values[cube[names.STEP].values > 0]
    picks = sorted({int(steps[0]), int(steps[len(steps) // 2]), int(steps[-1])})
    assert_curves(bars(ax2), [(ns, cube[names.TWIN_CLOSER].sel({names.STEP: s}).mean(names.SEED).values) for s in picks])
    assert legend(ax2) == [f"step {s}" for s in picks]
    ratio = cube[names.TWIN_DISTANCE].median(names.SAMPLE) / cube[names.D1].median(names.SAMPLE)
    assert_curves(curves(ax3), [seed_means(ratio, n) for n in ns])
