"""`diffmem plan`: GPU-hours and disk from the config (src/diffmem/stages/plan.py), against a hand
computation; its FLOP counts against torch's FlopCounterMode (the counter of benchmarks/bench_training.py);
its errors; and config.yaml's celeba_paper experiment planned by Snakemake on stand-in images, locally and
with the SLURM profile."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_profiles import REPO, dry_run, needs_slurm_plugin, planned_jobs
from torch.utils.flop_counter import FlopCounterMode

from diffmem.cli import main
from diffmem.config import ModelConfig, checkpoint_grid, validate_config
from diffmem.metrics.features import InceptionV3Features
from diffmem.models import build_denoiser, count_parameters
from diffmem.resources import (
    CPU_GFLOPS_PER_THREAD,
    GPU_GFLOPS,
    INCEPTION_FLOPS,
    model_size,
    sampler_evals,
    train_step_flops,
)
from diffmem.stages.plan import device_rates, plan_experiment

# a small experiment whose numbers are easy to follow: 2 n x 3 seeds, 4 checkpoints, Adam, keep weights
SMALL = {
    "data": {"dataset": "digits", "n_train": [16, 64], "seeds": [0, 1, 2], "n_test": 297},
    "model": {"arch": "mlp", "width": 32, "depth": 2, "emb_dim": 16},
    "train": {"optimizer": "adam", "batch_size": 32, "max_steps": 1000, "checkpoint_steps": [10, 100]},
    "sample": {"num_samples": 50, "num_steps": 10},
    "score": {"device": "cpu"},
    "resources": {"cpus_per_job": 2},
}
RATES = device_rates(tflops=2.0, cpu_gflops=10.0)


def resolved(exp: dict, name: str = "small") -> dict:
    return validate_config({"experiments": {name: copy.deepcopy(exp)}})["experiments"][name]


def celeba_paper() -> dict:
    """config.yaml's celeba_paper section as written (not validated: its data folder is a placeholder)."""
    return yaml.safe_load((REPO / "config.yaml").read_text())["experiments"]["celeba_paper"]


def test_the_plan_of_a_small_experiment_is_the_hand_computation():
    exp = resolved(SMALL)
    jobs, disk, _ = plan_experiment("small", exp, RATES)
    net = build_denoiser(ModelConfig.from_dict(exp["model"]), data_shape=(1, 8, 8))
    params = count_parameters(net)
    forward = 2.0 * params  # an MLP's forward: one multiply-add per weight (biases and norms aside)
    assert model_size(exp["model"], (1, 8, 8)).flops == forward
    assert checkpoint_grid(exp["train"]) == [0, 10, 100, 1000]
    by_job = {j.job: j for j in jobs}
    assert list(by_job) == ["train n=16", "train n=64", "sample", "score"]  # no quality: not enabled
    # training: steps x 3 x forward x min(n, B), per run; 3 seeds each
    for n, batch in ((16, 16), (64, 32)):
        job = by_job[f"train n={n}"]
        assert job.runs == 3 and job.device == "GPU"
        assert job.longest_flops == pytest.approx(1000 * 3 * forward * batch)
        assert job.flops == pytest.approx(3 * 1000 * 3 * forward * batch)
        assert job.hours == pytest.approx(job.flops / 2e12 / 3600)
    # sampling: checkpoints x samples x Heun's 2 S - 1 evaluations x forward, 6 runs
    sample = by_job["sample"]
    assert sample.flops == pytest.approx(6 * 4 * 50 * 19 * forward)
    assert sample.hours == pytest.approx(6 * 4 * 50 * 19 * forward / 2e12 / 3600)
    # scoring on the CPU (score.device cpu) with cpus_per_job threads: 2 C M (n + n_test) D per run
    score = by_job["score"]
    assert score.device == "CPU x 2"
    assert score.flops == pytest.approx(3 * sum(2 * 4 * 50 * (n + 297) * 64 for n in (16, 64)))
    assert score.hours == pytest.approx(score.flops / (2 * 10e9) / 3600)
    # disk, 6 runs: weights 4 P at each of 4 checkpoints + resume.pt (weights + Adam's 8 P); samples float32 + caches
    assert disk.runs == 6 and disk.checkpoints_per_run == 4
    assert disk.checkpoints == 6 * (4 * 4 * params + 4 * params + 8 * params)
    assert disk.samples == 6 * 4 * 50 * (4 * 64 + 32)
    assert disk.scores == 6 * 2 * 4 * 50 * 24


@pytest.mark.parametrize("keep, optimizer, ema, per_run", [
    ("all", "adam", None, lambda p: 4 * (4 * p + 8 * p)),
    ("sampling", "adam", None, lambda p: 4 * 4 * p),
    ("weights", "sgd", None, lambda p: 4 * 4 * p + 4 * p + 4 * p),  # SGD keeps one momentum buffer
    ("weights", "adam", 0.999, lambda p: 4 * 8 * p + 8 * p + 8 * p),  # EMA: a second copy of the weights
])
def test_checkpoint_disk_follows_keep_optimizer_and_ema(keep, optimizer, ema, per_run):
    exp = copy.deepcopy(SMALL)
    exp["train"].update(keep=keep, optimizer=optimizer, ema_decay=ema)
    exp = resolved(exp)
    params = model_size(exp["model"], (1, 8, 8)).params
    assert plan_experiment("small", exp, RATES)[1].checkpoints == 6 * per_run(params)


def test_the_report_prints_the_rates_the_tables_and_the_total(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"experiments": {"small": SMALL, "other": SMALL}, "run": ["small"]}))
    main(["plan", str(config), "--tflops", "2", "--cpu-gflops", "10"])
    out = capsys.readouterr().out
    assert "GPU rate: 2 TFLOP/s, given (--tflops)" in out and "CPU rate: 10 GFLOP/s per thread" in out
    assert "| small | train n=64 | 3 | 1,000 steps x batch 32 |" in out and "| other |" not in out
    jobs, disk, _ = plan_experiment("small", resolved(SMALL), RATES)
    gpu_hours = sum(j.hours for j in jobs if j.device == "GPU")
    core_hours = 2 * sum(j.hours for j in jobs if j.device == "CPU x 2")
    total = [line for line in out.splitlines() if line.startswith("total: ")]
    assert total == [f"total: {gpu_hours:.3g} GPU-hours (train {sum(j.hours for j in jobs[:2]):.3g}, "
                     f"sample {jobs[2].hours:.3g}) + {core_hours:.3g} CPU core-hours; disk {disk.total / 1e9:.3g} GB"]
    main(["plan", str(config), "--all"])
    assert "| other | sample | 6 |" in capsys.readouterr().out
    main(["plan", str(config), "--experiment", "other"])
    out = capsys.readouterr().out
    assert "| other | sample | 6 |" in out and "| small |" not in out


def test_rates_default_to_the_measured_h100_and_scale_to_a_named_gpu():
    assert device_rates().gpu_flops == GPU_GFLOPS * 1e9 and device_rates().cpu_flops == CPU_GFLOPS_PER_THREAD * 1e9
    assert "benchmarks/README.md" in device_rates().gpu_source
    assert device_rates(gpu="NVIDIA H100 80GB HBM3").gpu_flops == pytest.approx(GPU_GFLOPS * 1e9)
    assert device_rates(gpu="a100").gpu_flops == pytest.approx(GPU_GFLOPS * 1e9 * 19.5 / 67.0)
    assert device_rates(gpu="h100 pcie").gpu_flops == pytest.approx(GPU_GFLOPS * 1e9 * 51.2 / 67.0)
    assert device_rates(tflops=3.5, gpu="a100").gpu_flops == 3.5e12  # a given rate wins
    with pytest.raises(ValueError, match="no published peak for GPU 'V100'"):
        device_rates(gpu="V100")


@pytest.mark.parametrize("args, message", [
    (["missing.yaml"], "config file missing.yaml does not exist"),
    (["{config}", "--experiment", "nope"], "experiment 'nope' is not defined in {config} (defined: small)"),
    (["{config}", "--tflops", "0"], "--tflops must be a positive rate, got 0"),
    (["{config}", "--gpu", "V100"], "no published peak for GPU 'V100'"),
])
def test_bad_input_stops_with_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"experiments": {"small": SMALL}}))
    with pytest.raises(SystemExit, match="^2$"):
        main(["plan", *(a.format(config=config) for a in args)])
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("diffmem: error: ") and message.format(config=config) in line


def test_sampler_evaluations_per_sample():
    assert sampler_evals({"parameterization": "edm"}, {"sampler": "auto", "num_steps": 18}) == 35  # Heun
    assert sampler_evals({"parameterization": "ddpm"}, {"sampler": "auto", "num_steps": 100}) == 100  # DDIM
    assert sampler_evals({"parameterization": "edm"}, {"sampler": "euler_maruyama", "num_steps": 250}) == 250


def test_training_flops_agree_with_the_benchmarks_counter_on_the_celeba_unet():
    """3 x forward is what FlopCounterMode counts for a forward + backward of celeba_paper's U-Net (its
    benchmark: 14.45 GFLOP per step at batch 4); counted on the meta device, so nothing is computed."""
    cfg = ModelConfig.from_dict(celeba_paper()["model"])
    with torch.device("meta"):
        net = build_denoiser(cfg, data_shape=(1, 32, 32)).eval()
    x, sigma = torch.zeros(4, 1, 32, 32, device="meta"), torch.ones(4, device="meta")
    with FlopCounterMode(display=False) as counter:
        net(x, sigma).square().sum().backward()
    size = model_size(dataclasses.asdict(cfg), (1, 32, 32))
    assert train_step_flops(size, 4) == pytest.approx(counter.get_total_flops(), rel=0.01)
    assert train_step_flops(size, 4) == pytest.approx(14.45e9, rel=0.01)


def test_inception_flops_are_the_counted_ones():
    with torch.device("meta"):
        net = InceptionV3Features()
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 1, 32, 32, device="meta"))  # resized to 299 x 299 inside
    assert INCEPTION_FLOPS == pytest.approx(counter.get_total_flops(), rel=1e-3)


# ---- config.yaml's celeba_paper through Snakemake, on stand-in images


def write_stand_in_celeba(folder, count: int) -> None:
    """`count` random 32x32 grayscale PNGs named like CelebA's files (what data.dataset celeba reads)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(folder / f"{i + 1:06d}.png")


@pytest.fixture(scope="module")
def celeba_config(tmp_path_factory):
    """A copy of config.yaml running celeba_paper, its two placeholders pointed at stand-ins: the fewest
    images its pool needs (n_test + the largest n) and an empty Inception weights file."""
    tmp = tmp_path_factory.mktemp("celeba_paper")
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    exp = cfg["experiments"]["celeba_paper"]
    write_stand_in_celeba(tmp / "img_align_celeba", exp["data"]["n_test"] + max(exp["data"]["n_train"]))
    (tmp / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"")
    exp["data"]["path"] = str(tmp / "img_align_celeba")
    exp["quality"]["inception_weights"] = str(tmp / "pt_inception-2015-12-05-6726825d.pth")
    cfg["run"] = ["celeba_paper"]
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return tmp, path


def celeba_jobs(jobs: list[dict], rule: str) -> list[dict]:
    return [j for j in jobs if j["rule"] == rule]


@pytest.mark.snakemake
def test_celeba_paper_plans_locally(celeba_config):
    tmp, config = celeba_config
    out = dry_run(tmp, "--cores", "2", "--configfile", str(config))
    jobs = planned_jobs(out)
    runs = {(int(j["wildcards"]["n"]), int(j["wildcards"]["seed"])) for j in celeba_jobs(jobs, "train")}
    assert runs == {(n, s) for n in (128, 256, 512, 1024, 2048) for s in (0, 1)}
    for rule in ("train", "sample", "score", "quality"):  # one U-Net per job: never grouped
        assert len(celeba_jobs(jobs, rule)) == 10, rule
    assert not [j for j in jobs if j["rule"].startswith("train_grouped_")]
    # quality's Inception runs on the job's threads (resources.cpus_per_job, capped at --cores)
    commands = [line for line in out.splitlines() if "diffmem quality " in line]
    assert len(commands) == 10 and all(" --threads 2 " in line for line in commands), commands[:1]


@pytest.mark.snakemake
@needs_slurm_plugin
def test_celeba_paper_training_jobs_each_request_a_gpu_under_the_slurm_profile(celeba_config):
    tmp, config = celeba_config
    out = dry_run(tmp, "--profile", "workflow/profiles/slurm", "--configfile", str(config))
    jobs = planned_jobs(out)
    train = celeba_jobs(jobs, "train")
    assert len(train) == 10
    for job in train + celeba_jobs(jobs, "sample"):
        assert int(job["resources"]["gpu"]) == 1, job
    for job in train:  # the experiment's 48 h, under the time limit of a usual partition
        assert int(job["resources"]["runtime"]) == celeba_paper()["resources"]["train_runtime_min"], job
    quality = celeba_jobs(jobs, "quality")
    assert len(quality) == 10 and all(int(j["resources"]["cpus_per_task"]) == 8 for j in quality)


def test_celeba_paper_plan_is_the_one_the_docs_quote(celeba_config, capsys):
    """docs/scaling-out.md pastes `diffmem plan --experiment celeba_paper`; the plan is the hand computation."""
    _, config = celeba_config
    main(["plan", str(config), "--experiment", "celeba_paper"])
    out = capsys.readouterr().out.rstrip("\n")
    docs = (REPO / "docs" / "scaling-out.md").read_text()
    quoted = docs.split("What `diffmem plan --experiment celeba_paper` printed")[1].split("```text\n")[1].split("\n```")[0]
    assert quoted == out
    exp = validate_config(yaml.safe_load(config.read_text()))["experiments"]["celeba_paper"]
    jobs, disk, _ = plan_experiment("celeba_paper", exp, device_rates())
    forward = model_size(exp["model"], (1, 32, 32)).flops
    by_job = {j.job: j for j in jobs}
    assert disk.runs == 10 and disk.checkpoints_per_run == 75  # the paper's grid cut at 2,000,000 steps
    assert by_job["train n=1024"].longest_hours == pytest.approx(2e6 * 3 * forward * 512 / 8e12 / 3600)
    assert by_job["sample"].longest_flops == pytest.approx(75 * 10_000 * 100 * forward)  # DDIM, 100 steps
    assert by_job["quality (FID)"].device == "CPU x 8"
    assert by_job["quality (FID)"].longest_flops == pytest.approx((75 * 10_000 + 10_000) * INCEPTION_FLOPS)
