"""Copy gallery: which checkpoints are shown, and a drawn gallery for image and flat data."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from diffmem import names
from diffmem.config import ScoreConfig
from diffmem.figures import gallery
from diffmem.figures.gallery import as_image, gallery_steps, make_gallery, pca_2d, run_taus
from diffmem.stages.score import score_run

STEPS = [0, 1, 3, 10, 32, 100, 316, 1000, 3162, 10000]


def test_steps_before_inside_after():
    chosen = gallery_steps(STEPS, tau_gen=50.0, tau_mem=2000.0)
    assert [s for _, s in chosen] == [32, 316, 10000]  # sqrt(50 * 2000) = 316
    assert chosen[0][0].startswith("before tau_gen") and chosen[2][0].startswith("after tau_mem")


def test_steps_fall_back_when_a_tau_is_missing():
    no_gen = gallery_steps(STEPS, tau_gen=np.nan, tau_mem=2000.0)
    assert no_gen[0] == ("first checkpoint (no tau_gen)", 1)
    no_mem = gallery_steps(STEPS, tau_gen=50.0, tau_mem=np.nan)
    assert no_mem[-1] == ("last checkpoint (tau_mem not reached)", 10000)
    assert all(lbl != "" for lbl, _ in no_mem)
    early_gen = gallery_steps(STEPS, tau_gen=0.5, tau_mem=np.nan)
    assert "is earlier" in early_gen[0][0] and early_gen[0][1] == 1


def test_steps_skip_an_empty_window_and_single_checkpoint():
    chosen = gallery_steps([0, 10, 100, 1000], tau_gen=200.0, tau_mem=300.0)  # no checkpoint in [200, 300)
    assert [s for _, s in chosen] == [100, 1000]
    assert gallery_steps([0], tau_gen=np.nan, tau_mem=np.nan) == [("the only checkpoint", 0)]


def test_run_taus_reads_one_run_and_tolerates_a_missing_tau_gen():
    fit = xr.Dataset({names.TAU_MEM: ((names.N, names.SEED), [[100.0, np.nan], [400.0, 500.0]])},
                     coords={names.N: [8, 16], names.SEED: [0, 1]})
    tau_gen, tau_mem = run_taus(fit, n=16, seed=1)
    assert np.isnan(tau_gen) and tau_mem == 500.0


def test_pca_2d_finds_the_spread_direction():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)) * np.array([5.0, 0.1, 0.1, 2.0, 0.1])
    _, comps = pca_2d(x)
    assert abs(comps[0, 0]) > 0.99 and abs(comps[1, 3]) > 0.99


@pytest.mark.parametrize("image_shape", [(1, 4, 4), None])
def test_make_gallery_shows_the_samples_beside_their_nearest_training_points(tmp_path, image_shape, drawn):
    rng = np.random.default_rng(0)
    train = rng.uniform(-1, 1, size=(12, 16)).astype(np.float32)
    files, steps = {}, [0, 10, 100]
    for step in steps:
        x = rng.uniform(-1, 1, size=(20, 16)).astype(np.float32)
        if step == 100:
            x[:5] = train[:5] + 0.001  # planted copies
        np.save(tmp_path / f"s{step}.npy", x)
        files[str(step)] = str(tmp_path / f"s{step}.npy")
    manifest = {"n": 12, "seed": 0, "steps": steps, "files": files}
    pool_index = np.arange(12) + 100
    scores = score_run(manifest, train, pool_index, train[:3], cfg=ScoreConfig(num_bootstrap=5), device="cpu",
                       log=lambda m: None)
    assert scores[names.F_MEM].sel({names.STEP: 100}) >= 0.25
    fit = xr.Dataset({names.TAU_MEM: ((names.N, names.SEED), [[50.0]]), names.TAU_GEN: ((names.N, names.SEED), [[5.0]])},
                     coords={names.N: [12], names.SEED: [0]})
    out = tmp_path / "g.png"
    figs = drawn.watch(gallery)
    chosen = make_gallery(manifest=manifest, scores=scores, train=train, pool_index=pool_index,
                          image_shape=image_shape, fit=fit, out=out, num_pairs=6, title="t")
    # no positive checkpoint before tau_gen = 5 (fallback: the first, 10), which is also the window's only one
    assert [s for _, s in chosen] == [10, 100]
    assert out.exists() and list(figs) == ["g.png"]
    fig, threshold = figs["g.png"], float(scores[names.F_MEM].attrs[names.RATIO_THRESHOLD])
    lo, hi = float(train.min()), float(train.max())
    for j, (_, step) in enumerate(chosen):
        at = scores.sel({names.STEP: step})
        samples = np.load(files[str(step)])
        nearest = train[at[names.NEAREST].values - 100]  # pool index -> training row
        memorized = at[names.RATIO].values < threshold
        if step == 100:
            assert memorized[:5].all()  # the planted copies
        if image_shape is not None:  # one panel per checkpoint: rows of (sample, nearest training image)
            ax = fig.axes[j]
            labels = [t.get_text() for t in ax.texts][2:]  # after the two tile titles: d1/d2 and d1 of each row
            assert len(ax.images) == 2 * 6 and len(labels) == 2 * 6
            for i in range(6):
                np.testing.assert_allclose(ax.images[2 * i].get_array(), as_image(samples[i], image_shape, lo, hi))
                np.testing.assert_allclose(ax.images[2 * i + 1].get_array(), as_image(nearest[i], image_shape, lo, hi))
                assert labels[2 * i].startswith(f"d1/d2 {at[names.RATIO].values[i]:.2f}")
                assert labels[2 * i].endswith(" MEM") == memorized[i]
                assert labels[2 * i + 1] == f"d1 {at[names.D1].values[i]:.2f}"
                frame = ax.patches[2 * i]  # red and thick around a memorized sample
                assert (frame.get_linewidth() == 3) == memorized[i]
        else:  # every sample on the training set's first two principal components, memorized ones red
            ax = fig.axes[j]
            mean, comps = pca_2d(train)
            plain, red, points = (c.get_offsets() for c in ax.collections)
            projected = (samples - mean) @ comps.T
            np.testing.assert_allclose(np.concatenate([plain, red]),
                                       np.concatenate([projected[~memorized], projected[memorized]]), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(points, (train - mean) @ comps.T, rtol=1e-5, atol=1e-6)
            assert ax.get_title().startswith(f"step {step}: ")
