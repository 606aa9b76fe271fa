"""Run settings: kept out of the rules' params, merged back into a stage's slice, and never part of a
cache key (else changing one would silently retrain or resample even though nothing reran it)."""

from __future__ import annotations

import json

import pytest

from diffmem.config import (
    RUN_SETTINGS,
    ConfigError,
    SampleConfig,
    TrainConfig,
    load_schema,
    read_slice,
    split_run_settings,
)
from diffmem.generation import sample_cache_dir


def test_every_run_setting_is_a_schema_key():
    schema = load_schema()["$defs"]
    for section, keys in RUN_SETTINGS.items():
        assert set(keys) <= set(schema[section]["properties"]), section


def test_split_keeps_result_keys_and_run_settings_apart():
    values = {"lr": 0.01, "max_steps": 10, "threads": 4, "device": "cpu", "log_every": 5}
    result, run = split_run_settings("train", values)
    assert result == {"lr": 0.01, "max_steps": 10}
    assert run == {"threads": 4, "device": "cpu", "log_every": 5}
    assert split_run_settings("fit", {"ci_level": 0.9}) == ({"ci_level": 0.9}, {})


def test_run_settings_are_merged_into_their_slice(tmp_path):
    values = read_slice("train", json.dumps({"lr": 0.01}), json.dumps({"threads": 3, "log_every": 7}))
    assert values == {"lr": 0.01, "threads": 3, "log_every": 7}
    assert TrainConfig.from_dict(values).threads == 3
    path = tmp_path / "train.json"  # a slice may also come as a file
    path.write_text(json.dumps({"lr": 0.02}))
    assert read_slice("train", str(path)) == {"lr": 0.02}


def test_a_result_key_passed_as_a_run_setting_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"\['lr'\] are not run settings of 'train'"):
        read_slice("train", json.dumps({"max_steps": 10}), json.dumps({"lr": 0.1}))
    with pytest.raises(ConfigError, match=r"\['threads'\] given both in the 'train' slice and its run settings"):
        read_slice("train", json.dumps({"threads": 1}), json.dumps({"threads": 2}))


def test_a_slice_that_is_not_json_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"cannot parse config slice as JSON"):
        read_slice("train", "{lr: 0.1")


def test_training_run_settings_do_not_move_the_checkpoint_cache():
    """The trajectory hash (checkpoints/trajectory.json) leaves out TRAJECTORY_FREE; every train run setting is there."""
    assert set(RUN_SETTINGS["train"]) <= set(TrainConfig.TRAJECTORY_FREE)


def test_sampling_run_settings_do_not_move_the_sample_cache(tmp_path):
    base = SampleConfig()
    for key in RUN_SETTINGS["sample"]:
        changed = SampleConfig(**{**base.__dict__, key: getattr(base, key) * 2})
        assert sample_cache_dir(tmp_path, changed, source="t") == sample_cache_dir(tmp_path, base, source="t"), key
