"""End-to-end Snakemake runs on the smoke config, and the caching guarantees of the workflow.

(a) a finished run has nothing to do; (b) a new ratio_threshold reruns scoring and fitting only;
(c) a raised max_steps resumes training from the last checkpoint and samples only new checkpoints;
(d) a new seed adds only that branch. (b)-(d) each change their own copy of the finished run, so they
pass alone and in any order. Slow-ish (about two minutes on two cores).
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr
import yaml
from test_figures import check_experiment_figures

from diffmem.config import checkpoint_grid
from diffmem.figures import experiment
from diffmem.fitfile import read_fit

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.snakemake


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    # a guard against a hung run, not a speed target: the multi-family smoke run (146 jobs) ran past 900 s on
    # the shared 2-core machine at load ~9 (benchmarks, not tests, hold speed)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=2400)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def planned_jobs(workdir: Path, *targets: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a dry run would execute (for `targets`, default all)."""
    out = snakemake(workdir, "-n", *targets).stdout
    jobs = []
    for block in re.split(r"\n(?=rule |localrule )", out):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m:
            continue
        wc = re.search(r"wildcards: (.*)", block)
        wildcards = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
        jobs.append((m.group(1), wildcards))
    return jobs


def counts(jobs) -> dict[str, int]:
    return dict(collections.Counter(rule for rule, _ in jobs))


def write_config(workdir: Path, cfg: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wf")
    cfg = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())
    cfg["results_dir"] = "results"
    write_config(workdir, cfg)
    snakemake(workdir)
    return workdir, cfg


@pytest.fixture
def copied(finished, tmp_path):
    """A copy of the finished run (timestamps and Snakemake's records kept) for a test to change."""
    workdir, cfg = finished
    copy = tmp_path / "wf"
    shutil.copytree(workdir, copy, symlinks=True)
    return copy, yaml.safe_load(yaml.safe_dump(cfg))


def test_end_to_end_outputs(finished, drawn, tmp_path):
    workdir, cfg = finished
    exp = workdir / "results" / "smoke"
    with xr.open_dataset(exp / "cube.nc", engine="h5netcdf") as cube:
        assert set(cube["f_mem"].dims) == {"n", "seed", "step"}
        assert cube["ratio"].dims == ("n", "seed", "step", "sample")
        assert list(cube["n"].values) == cfg["experiments"]["smoke"]["data"]["n_train"]
        for var in ("f_mem", "f_mem_se", "train_loss", "test_loss", "ratio", "d1"):
            assert cube[var].attrs["units"] and cube[var].attrs["long_name"]
        for key in ("diffmem_version", "git_commit", "config_hash", "created"):
            assert key in cube.attrs
    with xr.open_datatree(exp / "fit.nc", engine="h5netcdf") as tree:  # each readout's fit in its own group
        assert tree["tau_mem"]["tau_mem"].dims == ("n", "seed")
        assert "exponent" in tree["tau_mem"] and "exponent_ci" in tree["tau_mem"]
    # each figure shows the cube and the fit: redrawn here on its own (a new process's settings), checked, and
    # the same pixels as the workflow's file, which the experiment's one plot job drew with all the others
    cube, fit = xr.load_dataset(exp / "cube.nc", engine="h5netcdf"), read_fit(exp / "fit.nc")
    figs = drawn.watch(experiment)
    figures = ("overview", "f_mem_vs_step", "f_mem_vs_step_over_n", "tau_mem_vs_n", "losses", "scaling")
    for name in figures:
        with drawn.as_a_new_process():
            experiment.make_figures(cube, fit, tmp_path, title="smoke", only={name})
        assert drawn.same_pixels(tmp_path / f"{name}.png", exp / "figures" / f"{name}.png"), name
    check_experiment_figures(figs, cube, fit)


def test_a_second_run_has_nothing_to_do(finished):
    workdir, _ = finished
    assert planned_jobs(workdir) == []


def test_b_ratio_threshold_reruns_scoring_and_fitting_only(copied):
    workdir, cfg = copied
    cfg["experiments"]["smoke"]["score"]["ratio_threshold"] = 0.5
    write_config(workdir, cfg)
    planned = counts(planned_jobs(workdir))
    pictures = {"gallery", "copies_figure"}  # figures drawn from the scores (workflow/rules/pictures.smk)
    assert set(planned) <= {"score", "cube", "fit", "plot_smoke", "all"} | pictures, planned
    assert planned["score"] == 4
    snakemake(workdir)
    with xr.open_dataset(workdir / "results/smoke/cube.nc", engine="h5netcdf") as cube:
        assert cube["f_mem"].attrs["ratio_threshold"] == 0.5
    assert "distances: 0 computed" in (workdir / "results/smoke/logs/score/n8_seed0.log").read_text()


def test_c_raising_max_steps_resumes_and_samples_only_new_checkpoints(copied):
    workdir, cfg = copied
    run = workdir / "results/smoke/runs/n16_seed1"
    state = run / "checkpoints"
    # resume.pt (train.keep: weights, the default) holds the last step's full state and moves on with training
    # (.snakemake_timestamp: Snakemake's own mark on a directory output)
    kept = [p for d in (state, run / "samples") for p in d.rglob("*") if p.is_file() and p.name not in ("resume.pt", ".snakemake_timestamp")]
    old = {str(p): p.stat().st_mtime_ns for p in kept}
    old_steps = sorted(int(p.name[4:13]) for p in state.glob("step*.pt"))
    assert (state / "resume.pt").is_file() and not (run / "checkpoints.partial").exists()
    cfg["experiments"]["smoke"]["train"]["max_steps"] = 200
    write_config(workdir, cfg)
    planned = counts(planned_jobs(workdir))
    assert planned.get("prepare_data", 0) == 0 and planned.get("subsample", 0) == 0
    assert planned["train"] == 4 and planned["sample"] == 4
    snakemake(workdir)
    log = (workdir / "results/smoke/logs/train/n16_seed1.log").read_text()
    assert f"resuming from step {old_steps[-1]}" in log
    assert all(Path(name).stat().st_mtime_ns == mtime for name, mtime in old.items()), "an existing checkpoint or sample was rewritten"
    new_steps = sorted(int(p.name[4:13]) for p in state.glob("step*.pt"))
    assert new_steps[-1] == 200 and set(old_steps) < set(new_steps)
    grid = set(checkpoint_grid(cfg["experiments"]["smoke"]["train"] | {"checkpoint_steps": None}))
    sample_log = (workdir / "results/smoke/logs/sample/n16_seed1.log").read_text()
    new, reused = len(grid - set(old_steps)), len(grid & set(old_steps))
    assert re.search(rf"n=16 seed=1: {new} checkpoints sampled \((native|torch) kernel\), {reused} reused", sample_log), sample_log


def test_d_adding_a_seed_adds_only_that_branch(copied):
    workdir, cfg = copied
    cfg["experiments"]["smoke"]["data"]["seeds"].append(2)
    write_config(workdir, cfg)
    jobs = planned_jobs(workdir)
    per_run = [(rule, wc) for rule, wc in jobs if rule in ("subsample", "train", "sample", "score")]
    assert len(per_run) == 8  # 4 stages x 2 values of n
    assert all(wc["seed"] == "2" for _, wc in per_run)
    assert "prepare_data" not in counts(jobs)
    snakemake(workdir)
    with xr.open_dataset(workdir / "results/smoke/cube.nc", engine="h5netcdf") as cube:
        assert list(cube["seed"].values) == [0, 1, 2]


def test_unknown_key_fails_before_any_job(tmp_path):
    cfg = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())
    cfg["experiments"]["smoke"]["train"]["max_step"] = 10
    write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    errors = [line for line in (proc.stderr + proc.stdout).splitlines() if "max_step" in line]
    assert errors == ["diffmem: config error at 'experiments.smoke.train': Additional properties are not allowed "
                      "('max_step' was unexpected) (unknown key; check the spelling)"]
    assert "properties" not in proc.stderr.replace(errors[0], "")  # no schema dump around the one line
    assert not (tmp_path / "results_smoke").exists()


def test_n_larger_than_pool_fails_with_one_clear_line(tmp_path):
    cfg = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())
    cfg["experiments"]["smoke"]["data"]["n_train"] = [8, 4096]
    write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    assert "n = [4096] larger than the pool of 1500 points" in proc.stderr + proc.stdout


def test_lint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(REPO / "Snakefile")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr
