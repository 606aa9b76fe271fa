import numpy as np
import pytest
import torch

from diffmem.checkpoint import CheckpointError, checkpoint_path, existing_steps, load_checkpoint
from diffmem.config import ModelConfig, TrainConfig
from diffmem.engine import TrainingDiverged, run_training

MODEL = ModelConfig(width=16, depth=1, emb_dim=8)
X = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
XT = np.random.default_rng(1).normal(size=(20, 6)).astype(np.float32)


def train(state_dir, *, max_steps, model=MODEL, **kw):
    settings = {"batch_size": 16, "checkpoints_per_decade": 2, "probe_size": 32, "lr": 3e-3, "log_every": 10**6}
    cfg = TrainConfig(max_steps=max_steps, **{**settings, **kw})
    return run_training(X, XT, model_cfg=model, train_cfg=cfg, seed=0, state_dir=state_dir, data_shape=(6,),
                        device=torch.device("cpu"), log=lambda m: None)


def final_weights(state_dir, step):
    return load_checkpoint(checkpoint_path(state_dir, step))["model"]


@pytest.mark.parametrize("extra", [{}, {"optimizer": "sgd", "ema_decay": 0.9}])
def test_resumed_run_equals_uninterrupted(tmp_path, extra):
    straight = train(tmp_path / "a", max_steps=50, **extra)
    train(tmp_path / "b", max_steps=20, **extra)
    resumed = train(tmp_path / "b", max_steps=50, **extra)
    wa, wb = final_weights(tmp_path / "a", 50), final_weights(tmp_path / "b", 50)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert straight == resumed
    if extra.get("ema_decay"):
        ea = load_checkpoint(checkpoint_path(tmp_path / "a", 50))["ema"]
        eb = load_checkpoint(checkpoint_path(tmp_path / "b", 50))["ema"]
        assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_checkpoint_is_self_describing(tmp_path):
    train(tmp_path, max_steps=10)
    ckpt = load_checkpoint(checkpoint_path(tmp_path, 10))
    assert ckpt["step"] == 10 and ckpt["version"] == 1
    assert ckpt["config"]["train"]["max_steps"] == 10 and ckpt["config"]["model"]["width"] == 16
    assert set(ckpt["metrics"]) == {"train_loss", "test_loss"}
    assert existing_steps(tmp_path) == [0, 1, 3, 10]


def test_loss_decreases(tmp_path):
    metrics = train(tmp_path, max_steps=200)
    assert metrics[200]["train_loss"] < 0.8 * metrics[0]["train_loss"]


def test_ddpm_parameterisation_trains(tmp_path):
    metrics = train(tmp_path, max_steps=30, model=ModelConfig(width=16, depth=1, emb_dim=8, parameterization="ddpm"))
    assert all(np.isfinite(v["train_loss"]) for v in metrics.values())


def test_nan_loss_stops_with_step_and_keeps_checkpoints(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"at step \d+"):
        train(tmp_path, max_steps=100, lr=1e12, optimizer="sgd")
    assert 0 in existing_steps(tmp_path)


def test_corrupt_checkpoint_is_named(tmp_path):
    train(tmp_path, max_steps=10)
    path = checkpoint_path(tmp_path, 10)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="step000000010.pt is corrupt"):
        train(tmp_path, max_steps=30)
