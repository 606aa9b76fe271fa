"""Resource requests sized from the grid (src/diffmem/resources.py) and train.grouped auto / group_by."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from diffmem.config import ConfigError, ModelConfig, size_experiment, training_groups, validate_config
from diffmem.models import build_denoiser, count_parameters
from diffmem.resources import KEYS, model_size

DIGITS = {"dataset": "digits", "n_train": [32, 64, 128, 256], "seeds": [0, 1, 2]}


def experiment(data=None, model=None, train=None, resources=None, **sections) -> dict:
    exp = {"data": copy.deepcopy(data or DIGITS), "model": model or {}, "train": train or {},
           "resources": resources or {}, **sections}
    return validate_config({"experiments": {"e": exp}})["experiments"]["e"]


def sized(**kwargs) -> dict:
    return size_experiment(experiment(**kwargs))["resources"]


@pytest.mark.parametrize("arch, shape, extra", [
    ("mlp", (64,), {"width": 256, "depth": 3, "emb_dim": 64}),
    ("mlp", (1, 8, 8), {"width": 32, "depth": 1, "emb_dim": 16}),
    ("linear", (16,), {}),
    ("unet", (1, 32, 32), {"width": 32}),
    ("unet", (1, 8, 8), {"width": 16}),
    ("unet", (3, 32, 32), {"width": 8, "channel_mult": (1, 2), "attn_levels": (1,)}),
    ("unet", (3, 16, 16), {"width": 32, "channel_mult": (1, 2, 2, 2), "attn_levels": ()}),
])
def test_model_size_matches_the_built_network(arch, shape, extra):
    cfg = ModelConfig(arch=arch, **extra)
    net = build_denoiser(cfg, data_shape=shape)
    size = model_size(dataclasses.asdict(cfg), shape)
    x, sigma = torch.randn(2, *shape), torch.rand(2) + 0.1
    with FlopCounterMode(display=False) as counter:
        net(x, sigma)
    flops = counter.get_total_flops() / 2
    exact = arch != "unet"  # the U-Net's GroupNorm and embedding parameters are approximated
    assert size.params == pytest.approx(count_parameters(net), rel=0 if exact else 0.02)
    assert size.flops == pytest.approx(flops, rel=0.06)  # biases and norms count as parameters, not matmul FLOPs
    assert 0 < size.widest <= size.activations


def test_every_key_is_filled_with_a_positive_integer():
    res = sized()
    assert set(res) == set(KEYS)
    assert all(isinstance(v, int) and v > 0 for k, v in res.items() if k != "gpus_per_train_job")
    assert res["gpus_per_train_job"] == 0 and res["cpus_per_job"] == 1


def test_given_values_are_kept_and_the_others_sized():
    res = sized(resources={"train_runtime_min": 7, "score_mem_mb": 12345})
    assert res["train_runtime_min"] == 7 and res["score_mem_mb"] == 12345
    assert res["train_mem_mb"] == sized()["train_mem_mb"]


def test_training_runtime_follows_steps_model_and_threads():
    long = {"max_steps": 10_000_000, "batch_size": 128}
    base = sized(model={"width": 256}, train=long)["train_runtime_min"]
    assert sized(model={"width": 256}, train={**long, "max_steps": 1_000_000})["train_runtime_min"] < base / 5
    assert sized(model={"width": 512}, train=long)["train_runtime_min"] > 2.5 * base  # ~4x the FLOPs
    assert sized(model={"width": 256}, train={**long, "threads": 4})["train_runtime_min"] < base / 3
    # the default experiment (30k steps of a width-128 MLP) asks for the minimum: it takes ~2.5 min a job
    assert sized(model={"width": 128}, train={"max_steps": 30_000, "batch_size": 64})["train_runtime_min"] == 10


@pytest.fixture
def images(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((1100, 1, 32, 32), np.float32))
    return {"dataset": "npy", "path": str(path), "n_train": [512, 1024], "seeds": [0, 1, 2, 3], "n_test": 10}


def test_gpu_requests_for_a_unet(images):
    train = {"batch_size": 128, "max_steps": 1_000_000}
    cpu = sized(data=images, model={"arch": "unet", "width": 32}, train=train, resources={"gpus_per_train_job": 0})
    gpu = sized(data=images, model={"arch": "unet", "width": 32}, train=train, resources={"gpus_per_train_job": 1})
    # activations of a batch of 128 32x32 images are device memory on a GPU, host memory on a CPU
    assert gpu["train_mem_mb"] < cpu["train_mem_mb"]
    # 1e6 U-Net steps: days on a GPU (measured 18 steps/s for one on an H100), a year on CPU
    assert 24 * 60 < gpu["train_runtime_min"] < 14 * 24 * 60
    assert cpu["train_runtime_min"] > 30 * gpu["train_runtime_min"] / 4


def test_grouped_jobs_are_sized_for_their_largest_group():
    one = sized(train={"grouped": False, "max_steps": 1_000_000})
    group = sized(train={"grouped": True, "max_steps": 1_000_000})  # all 3 seeds of one n
    assert group["train_runtime_min"] > 2.5 * one["train_runtime_min"]  # CPU: compute scales with members
    assert group["sample_mem_mb"] == one["sample_mem_mb"]


def test_grouped_auto_follows_the_gpu_request():
    assert experiment()["train"]["grouped"] is False
    assert experiment(resources={"gpus_per_train_job": 1})["train"]["grouped"] is True
    assert experiment(train={"grouped": False}, resources={"gpus_per_train_job": 1})["train"]["grouped"] is False
    assert experiment(train={"grouped": True})["train"]["grouped"] is True
    unet = experiment(model={"arch": "unet", "width": 8}, resources={"gpus_per_train_job": 1})
    assert unet["train"]["grouped"] is False  # vmapped convolutions are slower than one U-Net per job
    closed = experiment(model={"family": "empirical"}, resources={"gpus_per_train_job": 1})
    assert closed["train"]["grouped"] is False  # auto never groups an untrained family
    with pytest.raises(ConfigError, match=r"train\.grouped.*random_features"):
        experiment(data={"dataset": "gaussian", "dim": 4, "n_train": [4], "seeds": [0]},
                   model={"family": "random_features"}, train={"grouped": True})


def test_group_by_and_max_group():
    def groups(**train):
        return training_groups(experiment(train={"grouped": True, **train}))

    assert [label for label, _ in groups()] == ["n32", "n64", "n128", "n256"]
    assert groups()[1][1] == [(64, 0), (64, 1), (64, 2)]
    assert [label for label, _ in groups(group_by="seed")] == ["seed0", "seed1", "seed2"]
    assert groups(group_by="seed")[2][1] == [(32, 2), (64, 2), (128, 2), (256, 2)]
    everything = groups(group_by="experiment")
    assert len(everything) == 1 and len(everything[0][1]) == 12
    parts = groups(group_by="experiment", max_group=5)
    assert [label for label, _ in parts] == ["all_part0", "all_part1", "all_part2"]
    assert [len(m) for _, m in parts] == [5, 5, 2]
    assert sorted(run for _, m in parts for run in m) == sorted(everything[0][1])


def test_top_level_gpus_per_train_job_is_every_experiments_default():
    raw = {"gpus_per_train_job": 1, "experiments": {
        "a": {"data": dict(DIGITS)},
        "b": {"data": dict(DIGITS), "resources": {"gpus_per_train_job": 0}},
        "c": {"data": dict(DIGITS), "resources": {"train_mem_mb": 999}},
    }}
    exps = validate_config(raw)["experiments"]
    assert [exps[k]["resources"]["gpus_per_train_job"] for k in "abc"] == [1, 0, 1]
    assert [exps[k]["train"]["grouped"] for k in "abc"] == [True, False, True]
    assert exps["c"]["resources"]["train_mem_mb"] == 999
    assert "gpus_per_train_job" not in raw["experiments"]["a"].get("resources", {})  # the input is not modified


def test_resources_command_prints_the_requests(capsys, tmp_path):
    from pathlib import Path

    from diffmem.cli import main

    config = Path(__file__).resolve().parents[1] / "config.yaml"
    main(["resources", str(config), "--gpus-per-train-job", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| digits |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1:3] == ["12", "2 x 6"] and cells[4] == "1"  # 12 runs, grouped as config.yaml says: 2 jobs of 6
    # train.group_evaluation: one sample and one score job per training job, asking for six runs' time
    per_run = size_experiment(validate_config(yaml.safe_load(config.read_text()))["experiments"]["digits"])["resources"]
    for cell, key in ((cells[5], "sample"), (cells[6], "score")):
        minutes = 6 * per_run[f"{key}_runtime_min"]
        assert cell == f"{per_run[f'{key}_mem_mb']} / {minutes // 60}:{minutes % 60:02d} (jobs of up to 6 runs)", cell
    main(["resources", str(config), "--all"])
    out = capsys.readouterr().out
    assert "| gaussian_d16 | 24 | 1 x 24 |" in out and "| tikhonov_digits/strength0 | 4 | none (closed form) | — |" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiments: {e: {data: {dataset: digits, n_train: [5000], seeds: [0]}}}\n")
    with pytest.raises(SystemExit, match="^2$"):  # fail(): a user error, its cause on stderr
        main(["resources", str(bad)])
    assert "n = [5000] larger than the pool" in capsys.readouterr().err
