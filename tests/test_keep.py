"""train.keep: what a finished run keeps, and that every policy still resumes or retrains exactly.

Engine level (a state folder), stage level (checkpoints/ and checkpoints.partial/), and the workflow:
each policy followed by a changed sampling setting (marked snakemake).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from diffmem.checkpoint import (
    FORMAT_VERSION,
    TRAJECTORY_NAME,
    checkpoint_path,
    existing_steps,
    is_resumable,
    load_checkpoint,
    load_resume,
    partial_dir,
    resume_path,
    save_checkpoint,
    strip_to_weights,
    trajectory_of,
)
from diffmem.config import ModelConfig, TrainConfig, checkpoint_grid
from diffmem.engine import run_training
from diffmem.stages import train as train_stage

REPO = Path(__file__).resolve().parents[1]
MODEL = ModelConfig(width=16, depth=1, emb_dim=8)
POOL = np.random.default_rng(3).normal(size=(64, 6)).astype(np.float32)
XT = np.random.default_rng(4).normal(size=(16, 6)).astype(np.float32)
SETTINGS = {"batch_size": 16, "checkpoints_per_decade": 2, "probe_size": 32, "lr": 3e-3, "log_every": 10**6}


def train(state_dir, *, keep, max_steps, log=lambda m: None):
    cfg = TrainConfig(max_steps=max_steps, keep=keep, **SETTINGS)
    return run_training(POOL[:40], XT, model_cfg=MODEL, train_cfg=cfg, seed=0, state_dir=state_dir, data_shape=(6,),
                        device=torch.device("cpu"), log=log)


def weights(state_dir, step):
    return load_checkpoint(checkpoint_path(state_dir, step))["model"]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("keep", ["all", "weights", "sampling"])
def test_each_policy_keeps_what_it_says_with_the_same_weights(tmp_path, keep):
    train(tmp_path / "ref", keep="all", max_steps=100)
    metrics = train(tmp_path / keep, keep=keep, max_steps=100)
    grid = checkpoint_grid({**SETTINGS, "max_steps": 100, "checkpoint_steps": None})
    assert existing_steps(tmp_path / keep) == grid and sorted(metrics) == grid
    full = [is_resumable(load_checkpoint(checkpoint_path(tmp_path / keep, s))) for s in grid]
    assert full == [keep == "all"] * len(grid)
    for step in grid:  # stripping drops the optimizer and streams, never the weights or the probe losses
        assert same_weights(weights(tmp_path / keep, step), weights(tmp_path / "ref", step)), step
        assert load_checkpoint(checkpoint_path(tmp_path / keep, step))["metrics"] == metrics[step]
    resume = load_resume(tmp_path / keep)
    if keep == "weights":
        assert resume["step"] == 100 and is_resumable(resume)
        assert same_weights(resume["model"], weights(tmp_path / "ref", 100))
    else:
        assert resume is None
    if keep != "all":
        size = sum(p.stat().st_size for p in (tmp_path / keep).glob("step*.pt"))
        assert size < 0.6 * sum(p.stat().st_size for p in (tmp_path / "ref").glob("step*.pt"))  # Adam's two moments gone


@pytest.mark.parametrize("keep", ["all", "weights", "sampling"])
def test_a_raised_max_steps_under_each_policy_ends_where_one_long_run_ends(tmp_path, keep):
    """all and weights resume from step 100 (the last grid checkpoint, or resume.pt); sampling keeps no
    state and trains again from step 0. Every way ends bit for bit on the uninterrupted run."""
    train(tmp_path / "long", keep="all", max_steps=300)
    train(tmp_path / keep, keep=keep, max_steps=100)
    lines = []
    train(tmp_path / keep, keep=keep, max_steps=300, log=lines.append)
    started = [line for line in lines if line.startswith("training 1 run from step")]
    assert started == [f"training 1 run from step {0 if keep == 'sampling' else 100} to 300 on cpu"], lines
    assert same_weights(weights(tmp_path / keep, 300), weights(tmp_path / "long", 300))


def test_a_weights_only_checkpoint_is_not_a_resume_point(tmp_path):
    """A run stopped between grid steps under keep: weights continues from the latest full checkpoint
    (the newest one), never from a stripped one."""
    train(tmp_path / "s", keep="weights", max_steps=100)
    resume_path(tmp_path / "s").unlink()  # no resume.pt: nothing after step 100 can be resumed ...
    lines = []
    train(tmp_path / "s", keep="weights", max_steps=300, log=lines.append)
    assert "training 1 run from step 0 to 300 on cpu" in lines  # ... and the stripped grid is no start either
    train(tmp_path / "long", keep="all", max_steps=300)
    assert same_weights(weights(tmp_path / "s", 300), weights(tmp_path / "long", 300))


def stage(tmp_path, folder, *, max_steps, lr=3e-3, keep="weights"):
    np.savez(tmp_path / "dataset.npz", pool=POOL, test=XT)
    np.savez(tmp_path / "train.npz", x=POOL[:40], indices=np.arange(40))
    cfg = {**SETTINGS, "max_steps": max_steps, "lr": lr, "device": "cpu"}
    train_stage.main(["--train", str(tmp_path / "train.npz"), "--dataset", str(tmp_path / "dataset.npz"),
                      "--model", json.dumps({"width": 16, "depth": 1, "emb_dim": 8}), "--train-cfg", json.dumps(cfg),
                      "--run-settings", json.dumps({"keep": keep}), "--seed", "0", "--checkpoints", str(folder),
                      "--out", str(tmp_path / "train_metrics.nc")])


def test_the_stage_trains_in_partial_and_publishes_then_continues_from_the_published_folder(tmp_path, caplog):
    folder = tmp_path / "checkpoints"
    stage(tmp_path, folder, max_steps=100)
    assert not partial_dir(folder).exists()
    first = trajectory_of(folder)
    assert first and sorted(p.name for p in folder.iterdir()) == sorted(
        [TRAJECTORY_NAME, "resume.pt"] + [checkpoint_path(folder, s).name for s in existing_steps(folder)])
    inode = (folder / "step000000010.pt").stat().st_ino
    caplog.set_level("INFO")
    stage(tmp_path, folder, max_steps=300)  # a raised max_steps: takes the published files, resumes at 100
    assert "resuming from step 100" in caplog.text and "continuing from the" in caplog.text
    assert (folder / "step000000010.pt").stat().st_ino == inode  # old checkpoints linked, not rewritten
    assert trajectory_of(folder) == first and max(existing_steps(folder)) == 300
    train(tmp_path / "long", keep="all", max_steps=300)
    assert same_weights(weights(folder, 300), weights(tmp_path / "long", 300))
    # another trajectory (a new learning rate) replaces the folder's checkpoints when it finishes
    caplog.clear()
    stage(tmp_path, folder, max_steps=100, lr=1e-3)
    assert "holds another trajectory's checkpoints" in caplog.text and "resuming" not in caplog.text
    assert trajectory_of(folder) != first and max(existing_steps(folder)) == 100


def test_a_failed_job_leaves_its_state_in_partial_and_the_rerun_continues_it(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "checkpoints"
    stage(tmp_path, folder, max_steps=10)
    calls = []

    def publish_fails(*args, **kwargs):  # the job dies after training, before publishing (e.g. a node failure)
        calls.append(1)
        raise SystemExit(1)

    monkeypatch.setattr(train_stage, "publish_checkpoints", publish_fails)
    with pytest.raises(SystemExit):
        stage(tmp_path, folder, max_steps=100)
    assert calls and max(existing_steps(partial_dir(folder))) == 100 and max(existing_steps(folder)) == 10
    monkeypatch.undo()
    caplog.set_level("INFO")
    stage(tmp_path, folder, max_steps=100)
    assert "every checkpoint of the grid exists; nothing to train" in caplog.text
    assert max(existing_steps(folder)) == 100 and not partial_dir(folder).exists()


# ------------------------------------------------------------------------------------ workflow
def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.mark.snakemake
def test_each_policy_then_a_changed_sampling_setting(tmp_path):
    """One experiment per policy; after a first run, a new sample.num_steps must work under each:
    all and weights sample their kept checkpoints, sampling (checkpoints deleted after sampling) retrains."""
    base = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())["experiments"]["smoke"]
    base = {**base, "data": {**base["data"], "n_train": [8], "seeds": [0]}, "quality": {"enabled": False}}
    cfg = {"results_dir": "results", "run": [f"keep_{k}" for k in ("all", "weights", "sampling")],
           "experiments": {f"keep_{k}": {**base, "train": {**base["train"], "keep": k}} for k in ("all", "weights", "sampling")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cubes = [f"results/keep_{k}/cube.nc" for k in ("all", "weights", "sampling")]
    snakemake(tmp_path, *cubes)
    run = "runs/n8_seed0"
    grid = checkpoint_grid({**base["train"], "checkpoint_steps": None})
    for keep in ("all", "weights"):
        folder = tmp_path / f"results/keep_{keep}/{run}/checkpoints"
        assert existing_steps(folder) == grid
        assert is_resumable(load_checkpoint(checkpoint_path(folder, grid[-1]))) == (keep == "all")
        assert (folder / "resume.pt").exists() == (keep == "weights")
    assert not (tmp_path / f"results/keep_sampling/{run}/checkpoints").exists()  # temp(): gone once sampled
    assert "Nothing to be done" in snakemake(tmp_path, "-n", *cubes).stdout  # a deleted temp() output reruns nothing
    about = json.loads(next((tmp_path / f"results/keep_weights/{run}/samples").glob("*/about.json")).read_text())
    assert about["sampling"]["num_steps"] == base["sample"]["num_steps"]  # what a sample cache folder holds

    for exp in cfg["experiments"].values():
        exp["sample"]["num_steps"] = 4
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, *cubes)
    retrained = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "rule train" in line]
    assert len(retrained) == 1 and "train_transient" in retrained[0], retrained  # only the sampling policy's run
    for keep in ("all", "weights", "sampling"):
        manifest = json.loads((tmp_path / f"results/keep_{keep}/{run}/samples.json").read_text())
        assert manifest["sample_config"]["num_steps"] == 4 and manifest["steps"] == grid
    assert not (tmp_path / f"results/keep_sampling/{run}/checkpoints").exists()


def test_stripping_from_the_payload_in_memory_writes_what_stripping_the_file_writes(tmp_path):
    """The training loop strips the previous grid checkpoint from the payload it saved, without reading the
    file back: the result must be the file that reading it back gives."""
    payload = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "ema": None, "config": {"a": 1},
               "metrics": {"train_loss": 0.25}, "optimizer": {"state": {0: {"exp_avg": torch.ones(2)}}},
               "rng": torch.zeros(3, dtype=torch.uint8), "perm": torch.arange(4), "cursor": 2}
    paths = [save_checkpoint(tmp_path / name, 10, payload) for name in ("read", "memory")]
    assert strip_to_weights(paths[0])
    assert strip_to_weights(paths[1], {"version": FORMAT_VERSION, "step": 10, **payload})
    a, b = (load_checkpoint(p) for p in paths)
    assert list(a) == list(b) == ["version", "step", "model", "ema", "config", "metrics"]
    assert torch.equal(a["model"]["w"], b["model"]["w"]) and a["metrics"] == b["metrics"] and a["config"] == b["config"]
    assert not strip_to_weights(paths[1])  # already weights only
