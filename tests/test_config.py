import copy
from pathlib import Path

import pytest
import yaml

from diffmem.config import ConfigError, checkpoint_grid, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]

BASE = {"experiments": {"e": {"data": {"dataset": "digits", "n_train": [8, 16], "seeds": [0]}}}}


def cfg(**overrides):
    c = copy.deepcopy(BASE)
    for path, value in overrides.items():
        node = c["experiments"]["e"]
        *head, last = path.split("__")
        for key in head:
            node = node.setdefault(key, {})
        node[last] = value
    return c


def test_defaults_are_filled():
    out = validate_config(cfg())
    exp = out["experiments"]["e"]
    assert exp["train"]["optimizer"] == "adam"
    assert exp["score"]["ratio_threshold"] == pytest.approx(1 / 3)
    assert exp["model"]["arch"] == "mlp"
    assert out["run"] == ["e"]


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match=r"experiments\.e\.train.*learning_rate"):
        validate_config(cfg(train__learning_rate=0.1))


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"experiments\.e\.train\.max_steps"):
        validate_config(cfg(train__max_steps="many"))


def test_n_larger_than_pool_is_an_error():
    with pytest.raises(ConfigError, match=r"n = \[5000\] larger than the pool of 1500"):
        validate_config(cfg(data__n_train=[8, 5000]))


def test_empty_n_list_is_an_error():
    with pytest.raises(ConfigError, match="n_train"):
        validate_config(cfg(data__n_train=[]))


def test_missing_npy_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        validate_config(cfg(data__dataset="npy", data__path=str(tmp_path / "nope.npy")))


def test_unknown_run_experiment():
    c = cfg()
    c["run"] = ["missing"]
    with pytest.raises(ConfigError, match="missing"):
        validate_config(c)


def test_repository_configs_are_valid():
    for path in (REPO / "config.yaml", REPO / "tests" / "smoke_config.yaml"):
        out = load_config(path)
        assert out["experiments"]


def test_checkpoint_grid_log_spaced_with_ends():
    grid = checkpoint_grid({"max_steps": 1000, "checkpoints_per_decade": 2, "checkpoint_steps": None})
    assert grid == [0, 1, 3, 10, 32, 100, 316, 1000]
    explicit = checkpoint_grid({"max_steps": 50, "checkpoints_per_decade": 2, "checkpoint_steps": [5, 20, 80]})
    assert explicit == [0, 5, 20, 50]


def test_raising_max_steps_extends_the_grid():
    small = checkpoint_grid({"max_steps": 1000, "checkpoints_per_decade": 4, "checkpoint_steps": None})
    big = checkpoint_grid({"max_steps": 10000, "checkpoints_per_decade": 4, "checkpoint_steps": None})
    assert set(small) <= set(big)


def test_config_yaml_parses_with_plain_yaml():
    with open(REPO / "config.yaml") as fh:
        assert "experiments" in yaml.safe_load(fh)


# ---- model families and sweeps


def gaussian(**data):
    return {"experiments": {"g": {"data": {"dataset": "gaussian", "dim": 8, "seeds": [0], **data}}}}


def test_psi_n_gives_n_train_from_the_dimension():
    out = validate_config(gaussian(psi_n=[0.25, 1, 8]))
    assert out["experiments"]["g"]["data"]["n_train"] == [2, 8, 64]
    assert "psi_n" not in out["experiments"]["g"]["data"]


@pytest.mark.parametrize("data, match", [
    ({"psi_n": [1], "n_train": [8]}, "n_train or psi_n, not both"),
    ({}, "give the training-set sizes as n_train or psi_n"),
    ({"psi_n": [0.01, 0.02]}, "repeated n"),
])
def test_psi_n_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        validate_config(gaussian(**data))


def test_psi_n_needs_synthetic_data():
    with pytest.raises(ConfigError, match="psi_n = n / dim needs gmm or gaussian"):
        validate_config({"experiments": {"e": {"data": {"dataset": "digits", "psi_n": [1], "seeds": [0]}}}})


def test_sweeps_expand_into_leaves_and_are_checked():
    from diffmem.config import expand_sweeps

    out = validate_config(cfg(model__width=[16, 32]))
    leaves = expand_sweeps(out["experiments"])
    assert sorted(leaves) == ["e/width16", "e/width32"]
    assert leaves["e/width32"]["model"]["width"] == 32
    with pytest.raises(ConfigError, match="strength sweep needs family empirical"):
        validate_config(cfg(model__strength=[0.0, 1.0]))
    with pytest.raises(ConfigError, match="width sweep needs family network"):
        validate_config(cfg(model__family="empirical", model__width=[8, 16]))
    with pytest.raises(ConfigError, match="one key at a time"):
        validate_config(cfg(model__family="empirical", model__width=[8, 16], model__strength=[0.0, 1.0]))
    with pytest.raises(ConfigError, match="floor tau must be > 0"):
        validate_config(cfg(model__family="empirical", model__regularization="consistency", model__strength=[0.0]))


def test_random_features_needs_gaussian_data_and_no_quality():
    with pytest.raises(ConfigError, match="random_features is the paper's model"):
        validate_config(cfg(model__family="random_features"))
    bad = gaussian(n_train=[8])
    bad["experiments"]["g"]["model"] = {"family": "random_features"}
    bad["experiments"]["g"]["quality"] = {"enabled": True}
    with pytest.raises(ConfigError, match="generates no samples"):
        validate_config(bad)


def test_other_families_keys_do_not_move_a_network_trajectory():
    import numpy as np

    from diffmem.config import ModelConfig, TrainConfig
    from diffmem.engine import trajectory_hash

    x = np.zeros((4, 2), dtype=np.float32)
    base = trajectory_hash(ModelConfig(), TrainConfig(), x_train=x, seed=0)
    assert trajectory_hash(ModelConfig(strength=3.0, psi_p=2.0), TrainConfig(), x_train=x, seed=0) == base
    assert trajectory_hash(ModelConfig(width=8), TrainConfig(), x_train=x, seed=0) != base


def test_sweep_values_must_give_distinct_folders():
    with pytest.raises(ConfigError, match="coincide to 6 significant digits"):
        validate_config(cfg(model__family="empirical", model__regularization="tikhonov",
                            model__strength=[0.1234567, 0.1234568]))


def test_the_workflow_name_pattern_matches_every_sweep_leaf_and_twin(monkeypatch):
    """The workflow's {exp} wildcard (experiment_name_pattern): a sweep key missing from it left that
    sweep's leaves without rules, a MissingInputException at their training rule, grouped or not."""
    import re

    from diffmem import config

    def matches(name):
        return re.fullmatch(config.experiment_name_pattern(), name) is not None

    for key in config.SWEEP_KEYS:
        for value in (0, 0.1, 1e-05, 2.5e3, 32):
            leaf = config.sweep_leaf_name("my-exp_2", key, value)
            assert matches(leaf) and matches(config.twin_name(leaf)), leaf
    assert matches("digits") and matches(config.twin_name("digits"))
    assert not any(matches(name) for name in ("2digits", "digits/other0.1", "digits/width", "a/width8/b"))
    monkeypatch.setitem(config.SWEEP_KEYS, "dropout", "model")  # a key added later is matched without an edit
    assert matches(config.sweep_leaf_name("exp", "dropout", 0.1))


def test_linear_exact_needs_l2_gaussian_data_and_distinct_sizes():
    def exp(**model):
        c = gaussian(psi_n=[0.5, 1, 2])
        c["experiments"]["g"]["model"] = {"family": "linear_exact", **model}
        c["experiments"]["g"]["quality"] = {"divergence": "l2"}
        return c

    out = validate_config(exp(linear_dims=[8, 16]))["experiments"]["g"]
    assert out["model"]["linear_variant"] == "one_step" and out["model"]["linear_repeats"] == 100
    hellinger = exp()
    hellinger["experiments"]["g"]["quality"] = {"divergence": "hellinger"}
    with pytest.raises(ConfigError, match="set divergence l2"):
        validate_config(hellinger)
    with pytest.raises(ConfigError, match="repeated n"):
        validate_config(exp(linear_dims=[2]))  # n/d = 0.5, 1 at d = 2 both give n = 2
    with pytest.raises(ConfigError, match="linear_exact is evaluated in closed form"):
        validate_config(cfg(model__family="linear_exact", quality__divergence="l2"))


def test_gradient_descent_needs_noise_draws():
    bad = gaussian(n_train=[8])
    bad["experiments"]["g"]["model"] = {"family": "random_features", "rf_num_noise": 0}
    with pytest.raises(ConfigError, match="rf_num_noise"):
        validate_config(bad)
    bad["experiments"]["g"]["model"]["rf_solver"] = "flow"
    validate_config(bad)


def test_an_absent_data_path_is_checked_only_when_the_experiment_runs(tmp_path):
    """config.yaml may hold experiments whose data only some machines have (celeba_paper's placeholder)."""
    absent = str(tmp_path / "no_such_folder")
    exp = {"data": {"dataset": "images", "path": absent, "n_train": [4], "seeds": [0]}, "model": {"arch": "unet"}}
    cfg = {"run": ["digits"], "experiments": {"digits": {"data": {"dataset": "digits", "n_train": [16], "seeds": [0]}},
                                             "faces": exp}}
    validate_config(copy.deepcopy(cfg))
    with pytest.raises(ConfigError, match="no_such_folder"):
        validate_config({**copy.deepcopy(cfg), "run": ["faces"]})
