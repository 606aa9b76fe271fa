"""Grouped evaluation (`train.group_evaluation`) through the real Snakemake workflow, and the stages' several-run mode.

A copy of the shared smoke run (per-run jobs) is switched to grouped evaluation: nothing may rerun. Then its
evaluation outputs and every cache beside its samples are deleted and remade by the grouped jobs (one per
training group and stage: group_by n, so n8 and n16 of two seeds each): each run's samples, scores.nc and
quality.nc must equal what its own per-run jobs wrote, bit for bit, and switching back reruns nothing either.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from test_reruns import planned
from test_workflow import REPO, counts, planned_jobs, snakemake, write_config

from diffmem.io import NETCDF_ENGINE

pytestmark = pytest.mark.snakemake
EXP = "results_smoke/smoke"
PER_RUN = ("samples.json", "scores.nc", "quality.nc")


def run_dirs(workdir: Path) -> list[Path]:
    return sorted((workdir / EXP / "runs").glob("n*_seed*"))


def samples_of(run: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(run.glob("samples/*/step*.npy")) if ".tmp" not in p.name}


def netcdf(path: Path) -> xr.Dataset:
    with xr.open_dataset(path, engine=NETCDF_ENGINE) as ds:
        return ds.load()


@pytest.fixture(scope="module")
def regrouped(smoke_run, tmp_path_factory):
    """(workdir, config, jobs planned after the switch, jobs planned after the deletion, per-run outputs)."""
    workdir = tmp_path_factory.mktemp("grouped_eval") / "wf"
    shutil.copytree(smoke_run, workdir, symlinks=True)  # timestamps and Snakemake's records kept
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    before = {run.name: {"samples": samples_of(run), **{name: netcdf(run / name) for name in PER_RUN[1:]}}
              for run in run_dirs(workdir)}
    cfg["experiments"]["smoke"]["train"]["group_evaluation"] = True
    write_config(workdir, cfg)
    after_switch = planned(workdir, None)  # {} only where the dry run said "Nothing to be done"
    targets = []
    for run in run_dirs(workdir):
        for name in PER_RUN:
            (run / name).unlink()
            targets.append(str((run / name).relative_to(workdir)))
        shutil.rmtree(run / "samples")  # the samples and the distance and quality caches beside them
    # the per-run files as targets: the cube downstream is up to date, so `all` would not remake them
    after_deletion = planned_jobs(workdir, *targets)
    snakemake(workdir, *targets)
    return workdir, cfg, after_switch, after_deletion, before


def test_switching_a_finished_run_to_grouped_evaluation_reruns_nothing(regrouped):
    _, _, after_switch, _, _ = regrouped
    assert after_switch == {}


def test_one_job_per_training_group_and_stage_and_none_per_run(regrouped):
    _, _, _, jobs, _ = regrouped
    planned = counts(jobs)
    for stage in ("sample", "score", "quality"):
        assert stage not in planned, planned
        for group in ("n8", "n16"):
            assert planned.get(f"{stage}_grouped_smoke_{group}") == 1, planned


def test_every_run_evaluates_as_its_own_jobs_did(regrouped):
    workdir, _, _, _, before = regrouped
    assert sorted(before) == [run.name for run in run_dirs(workdir)]
    for run in run_dirs(workdir):
        got = samples_of(run)
        assert sorted(got) == sorted(before[run.name]["samples"]) and got, run.name
        for step, x in got.items():
            assert np.array_equal(x, before[run.name]["samples"][step]), (run.name, step)
        for name in PER_RUN[1:]:
            ds = netcdf(run / name)
            assert ds.identical(before[run.name][name]), (run.name, name)
    for stage in ("sample", "score", "quality"):  # one log per group, naming each of its runs
        log = (workdir / EXP / "logs" / stage / "grouped_n8.log").read_text()
        assert "n=8 seed=0" in log and "n=8 seed=1" in log and "n=16" not in log, (stage, log[-2000:])


def test_switching_back_reruns_nothing(regrouped):
    workdir, cfg, _, _, _ = regrouped
    back = yaml.safe_load(yaml.safe_dump(cfg))
    back["experiments"]["smoke"]["train"]["group_evaluation"] = False
    copy = workdir.parent / "back"
    shutil.copytree(workdir, copy, symlinks=True)
    write_config(copy, back)
    assert planned(copy, None) == {}


def test_a_member_with_a_newer_input_reruns_its_group_only(regrouped, tmp_path):
    workdir, _, _, _, _ = regrouped
    copy = tmp_path / "wf"
    shutil.copytree(workdir, copy, symlinks=True)
    # newer than its scores.nc and quality.nc, with other bytes (Snakemake skips an input newer by mtime alone
    # whose checksum it recorded unchanged)
    manifest = copy / EXP / "runs" / "n16_seed1" / "samples.json"
    manifest.write_text(manifest.read_text() + "\n")
    planned = counts(planned_jobs(copy))
    assert planned.get("score_grouped_smoke_n16") == 1 and planned.get("quality_grouped_smoke_n16") == 1, planned
    assert "score_grouped_smoke_n8" not in planned and "quality_grouped_smoke_n8" not in planned, planned
    assert not any(rule.startswith("sample") for rule in planned), planned


@pytest.mark.parametrize("stage, args, message", [
    ("score", ["--samples", "a.json", "b.json", "--train", "a.npz", "--dataset", "d.npz", "--score-cfg", "{}",
               "--out", "a.nc", "b.nc"],
     "diffmem score: --samples, --train and --out need one entry per run; got 2, 1 and 2"),
    ("sample", ["--train-metrics", "a.nc", "--checkpoints", "a", "b", "--sample-cfg", "{}", "--out", "a.json"],
     "diffmem sample: --train-metrics, --checkpoints and --out need one entry per run; got 1, 2 and 1"),
    ("quality", ["--samples", "a.json", "--train", "a.npz", "b.npz", "--dataset", "d.npz", "--data-cfg", "{}",
                 "--quality-cfg", "{}", "--out", "a.nc"],
     "diffmem quality: --samples, --train and --out need one entry per run; got 1, 2 and 1"),
])
def test_lists_of_different_lengths_fail_in_one_line_before_reading_anything(stage, args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "diffmem", stage, *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert errors == [f"diffmem: error: {message}"], proc.stderr  # one line (then the job's cost line)
    assert not any(tmp_path.iterdir())


def test_the_default_config_evaluates_in_one_job_per_training_job_and_stage(tmp_path):
    """config.yaml's digits experiment: two training jobs of six runs, and two jobs per evaluation stage."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    planned = counts(planned_jobs(tmp_path))
    for stage in ("train", "sample", "score", "quality"):
        assert stage not in planned, planned
        assert sorted(rule for rule in planned if rule.startswith(f"{stage}_grouped_digits_")) == [
            f"{stage}_grouped_digits_all_part0", f"{stage}_grouped_digits_all_part1"], planned
    assert sum(planned.values()) == 28, planned  # 27 jobs and `all`
