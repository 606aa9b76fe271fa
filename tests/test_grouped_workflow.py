"""Grouped training through the real Snakemake workflow.

The smoke experiment with `resources.gpus_per_train_job: 1` (so `train.grouped: auto` groups it; on
this CPU machine the jobs still train on the CPU), `group_by: experiment` and `max_group: 3`: its four
(n, seed) runs, with two different n, train in two grouped jobs. Every run's checkpoints must match
the per-(n, seed) `train` rule's to float tolerance, and the downstream outputs must be the usual ones.
"""

from __future__ import annotations

import pytest
import torch
import xarray as xr
import yaml
from test_workflow import REPO, planned_jobs, snakemake, write_config

from diffmem import native
from diffmem.checkpoint import existing_steps, load_checkpoint, trajectory_of
from diffmem.config import SWEEP_KEYS, checkpoint_grid, sweep_of

pytestmark = pytest.mark.snakemake


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(workdir, config) after running the grouped and the per-run variant of the smoke experiment."""
    workdir = tmp_path_factory.mktemp("grouped_wf")
    cfg = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())
    cfg["results_dir"] = "results"
    single = cfg["experiments"]["smoke"]
    single["quality"]["enabled"] = False
    grouped = yaml.safe_load(yaml.safe_dump(single))
    grouped["train"].update(group_by="experiment", max_group=3)
    grouped["resources"] = {"gpus_per_train_job": 1}
    cfg["experiments"] = {"single": single, "grouped": grouped}
    cfg["run"] = ["single", "grouped"]
    write_config(workdir, cfg)
    jobs = planned_jobs(workdir)
    snakemake(workdir, "--resources", "gpu=1")
    return workdir, cfg, jobs


def test_auto_grouping_plans_two_grouped_jobs_and_no_single_training(runs):
    _, _, jobs = runs
    rules = [rule for rule, _ in jobs]
    assert sorted(r for r in rules if r.startswith("train_grouped_")) == [
        "train_grouped_grouped_all_part0", "train_grouped_grouped_all_part1"]
    assert sum(rule == "train" and wc["exp"] == "grouped" for rule, wc in jobs) == 0
    assert sum(rule == "train" and wc["exp"] == "single" for rule, wc in jobs) == 4


def test_grouped_members_match_the_per_run_rule(runs):
    workdir, cfg, _ = runs
    data = cfg["experiments"]["single"]["data"]
    grid = checkpoint_grid(cfg["experiments"]["single"]["train"])
    for n in data["n_train"]:
        for seed in data["seeds"]:
            dirs = [workdir / "results" / exp / "runs" / f"n{n}_seed{seed}" / "checkpoints" for exp in ("single", "grouped")]
            assert [existing_steps(d) for d in dirs] == [grid, grid]
            assert trajectory_of(dirs[0]) == trajectory_of(dirs[1])  # same trajectory hash: grouping is not part of it
            a, b = (load_checkpoint(d / f"step{grid[-1]:09d}.pt") for d in dirs)
            for key in a["model"]:
                torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=1e-5)
            assert a["metrics"] == pytest.approx(b["metrics"], rel=1e-4)


def test_grouped_experiment_has_the_usual_cube(runs):
    workdir, cfg, _ = runs
    cubes = [xr.load_dataset(workdir / "results" / exp / "cube.nc") for exp in ("single", "grouped")]
    assert cubes[0].sizes == cubes[1].sizes
    assert set(cubes[0].data_vars) == set(cubes[1].data_vars)
    log = (workdir / "results" / "grouped" / "logs" / "train" / "grouped_all_part0.log").read_text()
    if native.available() is None:  # train.stack auto: under the native kernel the runs train one after another
        assert "3 runs train in stacks of at most 1 (train.stack: auto)" in log
        assert log.count("training 1 run from step 0") == 3
    else:  # torch's kernels: one stack of three
        assert "training 3 runs from step 0" in log


def test_sweep_leaves_of_every_key_plan_their_jobs_grouped(tmp_path):
    """A sweep of each key (config.SWEEP_KEYS), the trained ones grouped: every leaf plans its training,
    sampling and cube, and each sweep its combining rule. While the workflow's {exp} pattern was a copy of
    the sweep keys without tikhonov, a tikhonov sweep's leaves had no rule for their datasets, which
    Snakemake reported as a MissingInputException at the leaves' grouped training rules."""
    trained = {"data": {"dataset": "digits", "n_train": [8, 16], "seeds": [0, 1]},
               "model": {"width": 16, "depth": 1, "emb_dim": 8},
               "train": {"max_steps": 20, "grouped": True, "group_by": "seed"}}
    experiments = {
        "tik": yaml.safe_load(yaml.safe_dump(trained)),
        "wid": yaml.safe_load(yaml.safe_dump(trained)),
        "emp": {"data": trained["data"], "model": {"family": "empirical", "regularization": "tikhonov", "strength": [0, 1]}},
    }
    experiments["tik"]["train"]["tikhonov"] = [0, 0.1]
    experiments["wid"]["model"]["width"] = [8, 16]
    assert {sweep_of(exp)[0] for exp in experiments.values()} == set(SWEEP_KEYS)  # every key, so a new one fails here
    write_config(tmp_path, {"results_dir": "results", "experiments": experiments})
    jobs = planned_jobs(tmp_path)
    grouped = sorted(rule for rule, _ in jobs if rule.startswith("train"))
    assert grouped == sorted(f"train_grouped_{leaf}_seed{s}" for leaf in ("tik_tikhonov0", "tik_tikhonov0_1", "wid_width8",
                                                                          "wid_width16") for s in (0, 1))
    for rule, exps in (("sample", {"tik/tikhonov0", "tik/tikhonov0.1", "wid/width8", "wid/width16"}),
                       ("closed_form_sample", {"emp/strength0", "emp/strength1"})):
        assert {job["exp"] for r, job in jobs if r == rule} == exps
    assert sum(rule == "cube" for rule, _ in jobs) == 6
    assert {rule: job["exp"] for rule, job in jobs if rule.startswith("sweep_")} == {
        "sweep_tikhonov": "tik", "sweep_width": "wid", "sweep_strength": "emp"}
