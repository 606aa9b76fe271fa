"""workflow/profiles/slurm on a real SLURM: a single-node cluster on this machine (localhost, 2 CPUs),
started and stopped by tests/slurm_cluster.sh from Debian's slurm-wlm and munge.

(a) The smoke config submitted through the profile gives the cube a local run gives (the shared
    `smoke_run`), identical but for the creation time.
(b) A training job requeued mid-run (`scontrol requeue`: SLURM stops it with SIGTERM and queues it
    again) resumes from its resume.pt when it runs again, instead of starting over.
Skipped, with the reason, where the plugin, the SLURM binaries or root are missing or the daemons do not
start. Slow: each job pays a Snakemake start inside SLURM (several minutes on two shared cores).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests" / "slurm_cluster.sh"
pytestmark = [pytest.mark.snakemake, pytest.mark.slurm]

# Layered on workflow/profiles/slurm: this cluster's one partition, no account and no GPUs; job states
# from squeue (no slurmdbd, so no sacct); groups laid out for 2 CPUs, and at most 2 CPUs' worth of jobs
# submitted at a time.
LOCAL_CLUSTER_PROFILE = {
    "default-resources": {"slurm_partition": "debug", "mem_mb": 500, "runtime": 30},
    "set-resources": {"prepare_data": {"slurm_partition": "debug"}},
    "slurm-no-account": True,
    "slurm-status-command": "squeue",
    "slurm-init-seconds-before-status-checks": 2,
    "resources": {"cpus_per_task": 2},
    "config": ["gpus_per_train_job=0"],
}


def skip_reason() -> str | None:
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e .[test])"
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol") if shutil.which(b) is None]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} not found): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the single-node SLURM needs root (slurmd starts jobs as their user)"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    proc = subprocess.run(["bash", str(CLUSTER), "start", str(folder)], capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        pytest.skip(f"the SLURM daemons did not start: {proc.stderr.strip()[-1500:]}")
    profile = folder / "local_cluster"
    profile.mkdir()
    (profile / "config.yaml").write_text(yaml.safe_dump(LOCAL_CLUSTER_PROFILE))
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    yield env, profile
    subprocess.run(["scancel", "--user", str(os.getuid())], env=env, capture_output=True)
    subprocess.run(["bash", str(CLUSTER), "stop", str(folder)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def local_run(cluster, request):
    """The shared local smoke run, built only once the cluster is up: the session-scoped `smoke_run` named
    beside `cluster` in a test's arguments would be built first, even when the cluster then skips."""
    return request.getfixturevalue("smoke_run")


def submit(workdir: Path, env: dict, profile: Path, *targets: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", *targets, "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--profile", str(REPO / "workflow/profiles/slurm"), "--profile", str(profile),
           "--configfile", str(workdir / "config.yaml")]
    log = open(workdir / "snakemake.log", "w")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, workdir: Path, timeout: int = 1500) -> str:
    proc.wait(timeout=timeout)
    out = (workdir / "snakemake.log").read_text()
    assert proc.returncode == 0, out[-6000:]
    return out


def without_creation_time(ds: xr.Dataset) -> xr.Dataset:
    # provenance that records when the file was written (diffmem's `created`, ACDD's date_created and
    # the history line that starts with the time); everything else must be identical
    for key in ("created", "date_created", "history"):
        ds.attrs.pop(key, None)
    return ds


def test_smoke_config_through_the_slurm_profile_gives_the_local_cube(cluster, local_run, tmp_path):
    env, profile = cluster
    shutil.copy(REPO / "tests" / "smoke_config.yaml", tmp_path / "config.yaml")
    out = finish(submit(tmp_path, env, profile), tmp_path)
    assert re.search(r"submitted with SLURM jobid \d+", out)  # went through sbatch, not a local fallback
    # the profile's `evaluate` group: sample and score of the runs went to SLURM as one job (the plugin
    # logs a group job's submission under group_<group>_<rules>, a single rule's under rule_<rule>)
    assert re.search(r"submitted with SLURM jobid \d+ \(log: \S*group_evaluate_sample_score/", out), out[-6000:]
    cube = "results_smoke/smoke/cube.nc"
    with xr.open_dataset(local_run / cube, engine="h5netcdf") as local, \
            xr.open_dataset(tmp_path / cube, engine="h5netcdf") as slurm:
        xr.testing.assert_identical(without_creation_time(local.load()), without_creation_time(slurm.load()))


def test_a_requeued_training_job_resumes_from_resume_pt(cluster, tmp_path):
    env, profile = cluster
    cfg = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())
    exp = cfg["experiments"]["smoke"]
    exp["data"].update(n_train=[16], seeds=[0])
    # long enough to requeue it mid-run; resume.pt also written on SIGTERM, and on a 2 s timer
    exp["train"].update(max_steps=20000, log_every=250, resume_every_min=0.03)
    exp["quality"]["enabled"] = False
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    train_log = tmp_path / "results_smoke/smoke/logs/train/n16_seed0.log"
    target = "results_smoke/smoke/runs/n16_seed0/train_metrics.nc"
    proc = submit(tmp_path, env, profile, target)
    job_id, deadline = None, time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        text = train_log.read_text() if train_log.exists() else ""
        steps = [int(s) for s in re.findall(r"step (\d+)", text)]
        if steps and max(steps) >= 1000:  # training is under way, past a few resume saves
            queue = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %j"], env=env, capture_output=True,
                                   text=True).stdout.split()
            job_id = queue[0] if queue else None
            if job_id:
                subprocess.run(["scontrol", "requeue", job_id], env=env, check=True, capture_output=True)
                break
        time.sleep(1)
    assert job_id, f"the training job never got under way:\n{(tmp_path / 'snakemake.log').read_text()[-3000:]}"
    finish(proc, tmp_path)
    text = train_log.read_text()
    resumed = re.findall(r"resuming from step (\d+) \((.*?)\)", text)
    assert resumed and "resume.pt" in resumed[-1][1], text[-3000:]
    assert 0 < int(resumed[-1][0]) < 20000
    with xr.open_dataset(tmp_path / target, engine="h5netcdf") as metrics:
        assert int(metrics["step"].max()) == 20000
