"""The closed-form sampling stage: config -> denoiser, sampling, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffmem.config import ModelConfig, SampleConfig
from diffmem.families import (
    ConsistencyDenoiser,
    EmpiricalDenoiser,
    KernelSmoothedDenoiser,
    LinearDenoiser,
    TikhonovDenoiser,
)
from diffmem.families.closed_form import closed_form_denoiser
from diffmem.scoring import memorized, nearest_neighbors
from diffmem.stages.closed_form import sample_closed_form


@pytest.mark.parametrize("family, reg, cls", [
    ("empirical", "none", EmpiricalDenoiser), ("empirical", "tikhonov", TikhonovDenoiser),
    ("empirical", "consistency", ConsistencyDenoiser), ("empirical", "kernel", KernelSmoothedDenoiser),
    ("linear", "none", LinearDenoiser),
])
def test_config_selects_the_denoiser(family, reg, cls, rng):
    train = rng.normal(size=(10, 3)).astype(np.float32)
    den = closed_form_denoiser(ModelConfig(family=family, regularization=reg, strength=0.5), train)
    assert type(den) is cls
    x, sigma = torch.randn(5, 3), torch.full((5,), 0.7)
    assert den(x, sigma).shape == (5, 3)


def test_network_family_is_refused(rng):
    with pytest.raises(ValueError, match="not closed-form"):
        closed_form_denoiser(ModelConfig(), rng.normal(size=(4, 2)).astype(np.float32))


def test_samples_memorize_and_are_cached(tmp_path, rng):
    train = rng.normal(size=(20, 6)).astype(np.float32)
    cfg = SampleConfig(num_samples=40, num_steps=12)
    manifest = sample_closed_form(ModelConfig(family="empirical"), cfg, train=train, run_dir=tmp_path, n=20, seed=0,
                                  log=lambda m: None)
    assert manifest["steps"] == [0] and manifest["closed_form"]["family"] == "empirical"
    x = np.load(manifest["files"]["0"])
    d, _ = nearest_neighbors(x, train, k=2)
    assert memorized(d[:, 0], d[:, 1], ratio_threshold=1 / 3).mean() > 0.9
    messages = []
    again = sample_closed_form(ModelConfig(family="empirical"), cfg, train=train, run_dir=tmp_path, n=20, seed=0,
                               log=messages.append)
    assert again["files"] == manifest["files"] and "reused" in messages[0]
    other = sample_closed_form(ModelConfig(family="empirical", regularization="tikhonov", strength=1.0), cfg,
                               train=train, run_dir=tmp_path, n=20, seed=0, log=lambda m: None)
    assert other["files"]["0"] != manifest["files"]["0"]


def test_train_stage_refuses_untrained_families(tmp_path):
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "diffmem.stages.train", "--train", "x.npz", "--dataset", "d.npz",
                           "--model", json.dumps({"family": "empirical"}), "--train-cfg", "{}", "--seed", "0",
                           "--checkpoints", str(tmp_path), "--out", str(tmp_path / "m.nc")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "is not trained by this stage" in proc.stderr + proc.stdout
    assert not (tmp_path / "m.nc").exists()
