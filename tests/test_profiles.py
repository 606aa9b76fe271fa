"""The execution profiles resolve, and every job requests the resources its experiment's config says.

Dry runs only (nothing is submitted or executed): `snakemake [--profile workflow/profiles/slurm] -n`;
profiles/default applies to every run without being named.
Grouped training rules come from workflow/rules/train_grouped.smk; until the main Snakefile
includes it, the tests include it through a two-line wrapper Snakefile.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HAS_SLURM_PLUGIN = importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None
needs_slurm_plugin = pytest.mark.skipif(not HAS_SLURM_PLUGIN, reason="snakemake-executor-plugin-slurm not installed")

# distinct, non-default values so that a rule reading the wrong key fails the test
RESOURCES = {
    "smoke": {"train_mem_mb": 2345, "train_runtime_min": 17, "gpus_per_train_job": 0, "sample_mem_mb": 1234,
              "sample_runtime_min": 13, "score_mem_mb": 3456, "score_runtime_min": 19, "quality_mem_mb": 4567,
              "quality_runtime_min": 23, "cpus_per_job": 2, "small_mem_mb": 1111, "small_runtime_min": 11},
    "smoke-g": {"train_mem_mb": 5432, "train_runtime_min": 71, "gpus_per_train_job": 1, "sample_mem_mb": 4321,
                "sample_runtime_min": 31, "score_mem_mb": 6543, "score_runtime_min": 91, "quality_mem_mb": 7654,
                "quality_runtime_min": 32, "cpus_per_job": 1, "small_mem_mb": 2222, "small_runtime_min": 22},
}
# rule -> (mem key, runtime key, cpus: a resources key or "threads" for train.threads)
REQUESTS = {
    "train": ("train_mem_mb", "train_runtime_min", "threads"),
    "train_grouped": ("train_mem_mb", "train_runtime_min", "threads"),
    "sample": ("sample_mem_mb", "sample_runtime_min", "cpus_per_job"),
    "score": ("score_mem_mb", "score_runtime_min", "cpus_per_job"),
    "quality": ("quality_mem_mb", "quality_runtime_min", "cpus_per_job"),
    "classifier": ("quality_mem_mb", "quality_runtime_min", "cpus_per_job"),
}
SMALL = ("small_mem_mb", "small_runtime_min", None)


def snakefile(tmp_path: Path) -> Path:
    main = REPO / "Snakefile"
    if "train_grouped.smk" in main.read_text():
        return main
    wrapper = tmp_path / "Snakefile"
    wrapper.write_text(f'include: "{main}"\ninclude: "{REPO / "workflow/rules/train_grouped.smk"}"\n')
    return wrapper


def write_config(tmp_path: Path) -> Path:
    cfg = yaml.safe_load((REPO / "tests/smoke_config.yaml").read_text())
    smoke = cfg["experiments"]["smoke"]
    grouped = yaml.safe_load(yaml.safe_dump(smoke))
    grouped["train"].update(threads=2)  # grouped by train.grouped auto: its jobs hold a GPU
    cfg["experiments"]["smoke-g"] = grouped
    for name, res in RESOURCES.items():
        cfg["experiments"][name]["resources"] = res
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def dry_run(tmp_path: Path, *args: str, snakefile_path: Path | None = None) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-n", "--directory", str(tmp_path), *args]
    if snakefile_path is not None:
        cmd += ["--snakefile", str(snakefile_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "This was a dry-run" in out, out[-3000:]
    return out


def failed_dry_run(tmp_path: Path, cfg: dict) -> str:
    """The output of a dry run of the Snakefile on config `cfg`, which must fail."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--directory", str(tmp_path),
                           "--snakefile", str(REPO / "Snakefile"), f"--configfile={path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


def planned_jobs(out: str) -> list[dict]:
    """rule, output, wildcards, threads and resources of every job block of a dry run."""
    jobs = []
    for block in re.split(r"\n(?=\s*(?:local)?rule \S+:)", out):
        m = re.match(r"\s*(?:local)?rule (\S+):", block)
        if not m:
            continue
        job = {"rule": m.group(1), "wildcards": {}, "resources": {}, "threads": 1, "output": ""}
        for line in block.splitlines()[1:]:
            key, _, value = line.strip().partition(": ")
            if key == "wildcards":
                job["wildcards"] = dict(kv.split("=", 1) for kv in value.split(", "))
            elif key == "resources":
                job["resources"] = dict(kv.split("=", 1) for kv in value.split(", "))
            elif key == "threads":
                job["threads"] = int(value)
            elif key == "output":
                job["output"] = value
        jobs.append(job)
    return jobs


def experiment_of(job: dict) -> str:
    return job["wildcards"].get("exp") or re.search(r"results_smoke/([^/]+)/", job["output"]).group(1)


def assert_resources_follow_config(jobs: list[dict], *, local: bool = True) -> None:
    """Every job requests mem_mb, runtime and cpus_per_task from its experiment's resources (train and
    sample also gpu); Snakemake's threads equal cpus_per_task (it exports OMP_NUM_THREADS = threads; threads are capped at the cores,
    so the values stay at or below 2)."""
    checked = set()
    threads = {"smoke": 1, "smoke-g": 2}
    for job in jobs:
        rule, res = job["rule"], job["resources"]
        if rule == "all":
            continue
        kind = "train_grouped" if rule.startswith("train_grouped_") else rule
        want = RESOURCES[experiment_of(job)]
        mem, runtime, cpus = REQUESTS.get(kind, SMALL)
        assert int(res["mem_mb"]) == want[mem], job
        assert int(res["runtime"]) == want[runtime], job
        expected_cpus = 1 if cpus is None else threads[experiment_of(job)] if cpus == "threads" else want[cpus]
        assert int(res["cpus_per_task"]) == expected_cpus, job
        if local:  # a remote executor's dry run prints no threads
            assert job["threads"] == expected_cpus, job
        if kind in ("train", "train_grouped", "sample"):
            assert int(res["gpu"]) == want["gpus_per_train_job"], job
        checked.add(kind)
    assert {"train", "train_grouped", "sample", "score", "quality", "classifier", "cube", "fit",
            "prepare_data", "subsample"} <= checked, checked


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("profiles")
    return tmp, write_config(tmp), snakefile(tmp)


def test_grouped_experiment_trains_once_per_n_and_generic_train_skips_it(workdir):
    tmp, config, smk = workdir
    jobs = planned_jobs(dry_run(tmp, "--cores", "2", f"--configfile={config}", "all", snakefile_path=smk))
    train = [j for j in jobs if j["rule"] == "train"]
    grouped = [j for j in jobs if j["rule"].startswith("train_grouped_")]
    assert {j["wildcards"]["exp"] for j in train} == {"smoke"} and len(train) == 4
    assert sorted(j["rule"] for j in grouped) == ["train_grouped_smoke_g_n16", "train_grouped_smoke_g_n8"]
    for job in grouped:  # one job writes every seed's train_metrics.nc, with the configured threads
        assert job["output"].count("train_metrics.nc") == 2 and job["threads"] == 2
    assert sum(j["rule"] == "sample" and j["wildcards"]["exp"] == "smoke-g" for j in jobs) == 4


def test_default_profile_applies_unnamed_and_resources_follow_config(workdir):
    """profiles/default next to the Snakefile is Snakemake's workflow profile: used without --profile."""
    tmp, config, smk = workdir
    out = dry_run(tmp, "--cores", "2", f"--configfile={config}", "all", snakefile_path=smk)
    assert re.search(r"Using workflow specific profile \S*profiles/default for setting default command line", out)
    assert_resources_follow_config(planned_jobs(out))
    profile = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    assert profile["show-failed-logs"] is True
    # it also applies on top of the SLURM profile, where its keys win: nothing executor-specific in it
    assert not {"cores", "jobs", "executor", "resources", "default-resources", "set-resources"} & set(profile)


@needs_slurm_plugin
def test_slurm_profile_dry_run_resolves_on_the_smoke_config(tmp_path):
    out = dry_run(tmp_path, "--profile", "workflow/profiles/slurm", "--configfile", "tests/smoke_config.yaml")
    assert "Group job evaluate" in out  # sample + score of several runs share one submission


@needs_slurm_plugin
def test_slurm_profile_resources_follow_config_and_route_partitions(workdir):
    tmp, config, smk = workdir
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    out = dry_run(tmp, "--profile", "workflow/profiles/slurm", f"--configfile={config}", "all",
                  snakefile_path=smk)
    jobs = planned_jobs(out)
    assert_resources_follow_config(jobs, local=False)
    gpu_partition = profile["default-resources"]["slurm_partition"]
    for job in jobs:
        res = job["resources"]
        assert res["slurm_account"] == profile["default-resources"]["slurm_account"]
        expected = profile["set-resources"].get(job["rule"], {})
        assert res["slurm_partition"] == expected.get("slurm_partition", gpu_partition), job
    assert any(j["rule"].startswith("train_grouped_") and j["resources"]["slurm_partition"] == gpu_partition
               for j in jobs)


@needs_slurm_plugin
def test_slurm_profile_puts_training_on_gpus_and_groups_it_without_config_changes(tmp_path):
    """The profile's `config: gpus_per_train_job=1` is every experiment's default: the unchanged smoke
    config trains in grouped GPU jobs; --config gpus_per_train_job=0 (CPU nodes) trains one run per job."""
    gpu = planned_jobs(dry_run(tmp_path, "--profile", "workflow/profiles/slurm", "--configfile", "tests/smoke_config.yaml"))
    grouped = [j for j in gpu if j["rule"].startswith("train_grouped_")]
    assert len(grouped) == 2 and not any(j["rule"] == "train" for j in gpu)
    assert all(int(j["resources"]["gpu"]) == 1 for j in gpu if j["rule"] in ("sample",) or j in grouped)
    cpu = planned_jobs(dry_run(tmp_path, "--profile", "workflow/profiles/slurm", "--configfile",
                               "tests/smoke_config.yaml", "--config", "gpus_per_train_job=0"))
    train = [j for j in cpu if j["rule"] == "train"]
    assert len(train) == 4 and not any(j["rule"].startswith("train_grouped_") for j in cpu)
    assert all(int(j["resources"]["gpu"]) == 0 for j in train)


def test_grouped_rule_name_collision_is_a_clear_error(tmp_path):
    cfg = yaml.safe_load((REPO / "tests/smoke_config.yaml").read_text())
    exp = cfg["experiments"]["smoke"]
    exp["train"]["grouped"] = True
    cfg["experiments"] = {"a-b": exp, "a_b": yaml.safe_load(yaml.safe_dump(exp))}
    assert "experiments 'a-b' and 'a_b' both give the grouped training rule name" in failed_dry_run(tmp_path, cfg)
