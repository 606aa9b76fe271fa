"""A Tikhonov sweep (`train.tikhonov` a list) through the real Snakemake workflow.

Two penalties, c = 0 and 0.1, on the smallest trained network of the smoke tests, two (n, seed) runs
per leaf; each leaf's runs train in one grouped job (`train.grouped: true`, `group_by: experiment`),
the fewest jobs and the grouped path on sweep leaves at once (tests/test_grouped_workflow.py holds
grouped members to the per-run rule). Only the sweep's own files are built (the leaves' figures are
the other smoke runs' business): 21 jobs, a few minutes on the shared two cores.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_families_workflow import open_nc, plan_with, redrawn
from test_figures import check_strength_sweep
from test_workflow import counts, planned_jobs, snakemake, write_config

from diffmem import names
from diffmem.checkpoint import existing_steps, load_checkpoint, trajectory_of
from diffmem.config import checkpoint_grid, sweep_leaf_name
from diffmem.figures import sweep

pytestmark = pytest.mark.snakemake

PENALTIES = [0.0, 0.1]
CONFIG = {
    "results_dir": "results",
    "experiments": {
        "tik": {
            "data": {"dataset": "digits", "n_train": [8, 16], "seeds": [0]},
            "model": {"width": 16, "depth": 1, "emb_dim": 8},
            "train": {"lr": 0.003, "batch_size": 16, "max_steps": 20, "checkpoints_per_decade": 2, "probe_size": 32,
                      "log_every": 10, "tikhonov": PENALTIES, "grouped": True, "group_by": "experiment"},
            "sample": {"num_samples": 16, "num_steps": 6},
            "score": {"num_bootstrap": 20},
            "fit": {"num_bootstrap": 20},
        },
    },
    "run": ["tik"],
}
TARGET = "results/tik/figures/sweep_tikhonov.png"  # with the sweep's cube.nc and fit.nc, from the leaves' cubes and fits


def leaf(c: float) -> str:
    return sweep_leaf_name("tik", names.TIKHONOV, c)


def grouped_rule(c: float) -> str:
    return f"train_grouped_{leaf(c).replace('/', '_').replace('.', '_')}_all"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(workdir, config, the jobs planned before the run) of the finished sweep."""
    workdir = tmp_path_factory.mktemp("tikhonov_wf")
    cfg = copy.deepcopy(CONFIG)
    write_config(workdir, cfg)
    plan = planned_jobs(workdir, TARGET)
    snakemake(workdir, TARGET)
    return workdir, cfg, plan


def test_each_leaf_trains_its_runs_in_one_grouped_job_and_a_second_run_does_nothing(finished):
    workdir, _, plan = finished
    c = counts(plan)
    assert sorted(rule for rule in c if rule.startswith("train")) == sorted(grouped_rule(p) for p in PENALTIES)
    assert all(c[grouped_rule(p)] == 1 for p in PENALTIES)
    assert c["sample"] == c["score"] == 4 and c["cube"] == c["fit"] == 2 and c["sweep_tikhonov"] == 1
    assert planned_jobs(workdir, TARGET) == []


def test_the_cube_has_a_tikhonov_dimension_drawn_by_the_sweep_figure(finished, drawn, tmp_path):
    workdir, _, _ = finished
    cube = open_nc(workdir / "results" / "tik" / "cube.nc")
    fit = open_nc(workdir / "results" / "tik" / "fit.nc")
    assert list(cube[names.TIKHONOV].values) == PENALTIES
    assert set(cube[names.F_MEM].dims) == {names.TIKHONOV, names.N, names.SEED, names.STEP}
    assert list(cube[names.N].values) == [8, 16]
    assert fit[names.N_STAR].dims == (names.TIKHONOV,)
    # the figure of the workflow, the same pixels as drawn again here, shows f_mem against c per n
    figs = redrawn(drawn, sweep, ["sweep_tikhonov.png"], workdir / "results" / "tik" / "figures", tmp_path,
                   lambda: sweep.make_sweep_figure(cube, fit, tmp_path, title="tik"))
    check_strength_sweep(figs["sweep_tikhonov.png"], cube, key=names.TIKHONOV)


def test_the_penalty_reached_training(finished):
    """Same initial weights, same batches and noise: only the penalty differs, and the trained weights do."""
    workdir, cfg, _ = finished
    grid = checkpoint_grid(cfg["experiments"]["tik"]["train"])
    for n in (8, 16):
        dirs = [workdir / "results" / leaf(c) / "runs" / f"n{n}_seed0" / "checkpoints" for c in PENALTIES]
        assert [existing_steps(d) for d in dirs] == [grid, grid]
        assert trajectory_of(dirs[0]) != trajectory_of(dirs[1])
        first = [load_checkpoint(d / f"step{grid[0]:09d}.pt") for d in dirs]
        last = [load_checkpoint(d / f"step{grid[-1]:09d}.pt") for d in dirs]
        assert [ckpt["config"]["train"].get("tikhonov", 0.0) for ckpt in last] == PENALTIES  # 0: a quiet default
        for key in first[0]["model"]:
            torch.testing.assert_close(first[0]["model"][key], first[1]["model"][key], rtol=0, atol=0)
        change = max(float((last[0]["model"][k] - last[1]["model"][k]).abs().max()) for k in last[0]["model"])
        assert change > 1e-3, change
    # and so do the (plain, unpenalized) probe losses the cube holds
    cube = open_nc(workdir / "results" / "tik" / "cube.nc")
    loss = cube[names.TRAIN_LOSS].isel({names.STEP: -1})
    assert not np.allclose(loss.sel({names.TIKHONOV: 0.0}), loss.sel({names.TIKHONOV: 0.1}))


def test_a_changed_penalty_reruns_only_its_leaf_and_ungrouping_reruns_nothing(finished):
    workdir, cfg, _ = finished
    changed = copy.deepcopy(cfg)
    changed["experiments"]["tik"]["train"]["tikhonov"] = [0.0, 0.2]
    plan = plan_with(workdir, changed, restore=cfg, targets=[TARGET])
    assert {job["exp"] for _, job in plan if "exp" in job} == {leaf(0.2), "tik"}  # "tik": the sweep rule
    c = counts(plan)
    assert sorted(rule for rule in c if rule.startswith("train")) == [grouped_rule(0.2)]
    assert c["subsample"] == c["sample"] == c["score"] == 2 and c["cube"] == 1 and c["sweep_tikhonov"] == 1
    # the grouping is a run setting: the same leaves trained per (n, seed) are already done
    ungrouped = copy.deepcopy(cfg)
    ungrouped["experiments"]["tik"]["train"]["grouped"] = False
    assert plan_with(workdir, ungrouped, restore=cfg, targets=[TARGET]) == []
