"""Run settings: kept out of the rules' params, merged back into a stage's slice, and never part of a
cache key (else changing one would silently retrain or resample even though nothing reran it)."""

from __future__ import annotations

import json

import pytest

from diffmem.config import (
    RUN_SETTINGS,
    RUN_SETTINGS_KEY,
    ConfigError,
    SampleConfig,
    TrainConfig,
    load_schema,
    read_json_arg,
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


def test_a_slice_pointing_to_run_settings_gets_them_merged(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"threads": 3, "log_every": 7}))
    values = read_json_arg(json.dumps({"lr": 0.01, RUN_SETTINGS_KEY: str(path)}))
    assert values == {"lr": 0.01, "threads": 3, "log_every": 7}
    assert TrainConfig.from_dict(values).threads == 3


def test_a_missing_run_settings_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read the run settings .*missing.json.*run snakemake again"):
        read_json_arg(json.dumps({"lr": 0.01, RUN_SETTINGS_KEY: str(tmp_path / "missing.json")}))


def test_training_run_settings_do_not_move_the_checkpoint_cache():
    """The trajectory hash (state/<hash>/) leaves out TRAJECTORY_FREE; every train run setting is there."""
    assert set(RUN_SETTINGS["train"]) <= set(TrainConfig.TRAJECTORY_FREE)


def test_sampling_run_settings_do_not_move_the_sample_cache(tmp_path):
    base = SampleConfig()
    for key in RUN_SETTINGS["sample"]:
        changed = SampleConfig(**{**base.__dict__, key: getattr(base, key) * 2})
        assert sample_cache_dir(tmp_path, changed) == sample_cache_dir(tmp_path, base), key
