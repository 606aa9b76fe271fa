"""`diffmem plan [config.yaml] [--all] [--experiment NAME ...] [--tflops X] [--gpu NAME]`: the GPU-hours
and the disk an experiment will take, estimated from its config before anything runs.

Example: `diffmem plan --experiment celeba_paper` (its output is in docs/scaling-out.md).

Per experiment (each sub-experiment of a sweep and each twin counts as one) and per job kind, from the
config alone. F is the network's forward FLOPs per sample and P its parameters (`resources.model_size`,
which tests/test_resources.py holds to torch's FlopCounterMode, the counter of benchmarks/bench_training.py);
C the checkpoints of a run (`config.checkpoint_grid`), M = sample.num_samples, D the data dimension.

- training, one row per n, one job per run: FLOPs = max_steps x 3 F x min(n, train.batch_size)
  (forward + backward ~ 3 forwards: the backward computes the gradients of the activations and of the
  weights, a forward's work each; `resources.train_step_flops`);
- sampling, one job per run over all its checkpoints: FLOPs = C x M x E x F, with E the network
  evaluations per sample: Heun 2 S - 1, DDIM and Euler-Maruyama S (S = sample.num_steps);
- scoring, one job per run: FLOPs = 2 C M (n + n_test) D, the exact distances of every sample to the
  training set and to the held-out split; on the GPU unless score.device is cpu;
- quality (FID), one job per run where quality.feature_spaces has inception: FLOPs = (C M +
  min(num_reference, n_test)) x 11.42 GFLOP (Inception-v3 at 299x299), on the CPU with
  resources.cpus_per_job threads (the data and classifier spaces cost next to nothing);
- hours = FLOPs / rate / 3600. Training and sampling are planned on GPUs (whatever the experiment's
  resources.gpus_per_train_job, which the SLURM profile sets). The GPU rate is --tflops, or the measured one: resources.GPU_GFLOPS,
  fp32 U-Net training on an H100 (benchmarks/README.md), which --gpu NAME scales by NAME's published
  fp32 peak over the H100's. The CPU rate is --cpu-gflops (default resources.CPU_GFLOPS_PER_THREAD,
  the conservative rate the job requests are sized with) per thread. One rate for every experiment,
  whatever its train.precision or train.tf32.

Disk of one run, in bytes:
- checkpoints: the weights W = 4 P (8 P with train.ema_decay) of every checkpoint, and the optimizer
  state O (Adam 8 P, SGD with momentum 4 P): train.keep all C (W + O); weights C W + (W + O) (its
  resume.pt); sampling C W, deleted once the run is sampled;
- samples: C M (4 D + 32): float32 .npy files, and the distance caches beside them (float64 d1, d2,
  d_test, int64 index);
- scores and cube: 2 x 24 C M: scores.nc and the run's share of cube.nc (float32 ratio, d1, d2,
  d_test and int64 nearest_train per sample), before compression.

Read the hours as a floor: elementwise work, normalisations, the optimizer update, loss probes, data
loading and start-up are not counted, and a small model's step is launch-bound (~6-8 ms on an H100
whatever its FLOPs; `diffmem resources` adds that to its requests). The disk leaves out the dataset
file, logs, train_metrics.nc and figures. Families other than network (closed forms, random features)
are listed, not planned.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from diffmem.config import ConfigError, checkpoint_grid, expand_sweeps, load_config, twin_experiments
from diffmem.io import fail
from diffmem.resources import (
    CPU_GFLOPS_PER_THREAD,
    DISTANCE_CACHE_BYTES,
    GPU_GFLOPS,
    GPU_MEASURED_ON,
    INCEPTION_FLOPS,
    PUBLISHED_PEAKS,
    SCORE_BYTES,
    data_shape,
    inception_images,
    model_size,
    sampler_evals,
    score_flops,
    train_step_flops,
)
from diffmem.stages import stage_parser

GB = 1e9


@dataclass(frozen=True)
class Rates:
    """FLOP/s of one GPU and of one CPU thread, and where the GPU's comes from."""

    gpu_flops: float
    cpu_flops: float
    gpu_source: str


def published_fp32_peak(gpu: str) -> tuple[str, float]:
    """(label, fp32 TFLOP/s) of the first resources.PUBLISHED_PEAKS entry whose name is in `gpu`."""
    for needle, label, peaks in PUBLISHED_PEAKS:
        if needle.lower() in gpu.lower():
            return label, peaks["fp32"]
    known = ", ".join(needle for needle, _, _ in PUBLISHED_PEAKS)
    raise ValueError(f"no published peak for GPU '{gpu}' (known: {known}); give its rate with --tflops")


def device_rates(*, tflops: float | None = None, gpu: str | None = None,
                 cpu_gflops: float = CPU_GFLOPS_PER_THREAD) -> Rates:
    """The rates a plan uses: --tflops as given, else the measured H100 rate scaled to --gpu's fp32 peak."""
    cpu = cpu_gflops * 1e9
    if tflops is not None:
        return Rates(tflops * 1e12, cpu, "given (--tflops)")
    measured = GPU_GFLOPS * 1e9
    source = ("fp32 U-Net training measured on an H100 80GB HBM3, 18 steps/s at batch 128 "
              "(resources.GPU_GFLOPS; benchmarks/README.md, GPU results)")
    if gpu is None:
        return Rates(measured, cpu, source)
    label, peak = published_fp32_peak(gpu)
    fraction = measured / (published_fp32_peak(GPU_MEASURED_ON)[1] * 1e12)
    return Rates(fraction * peak * 1e12, cpu, f"{label}: its published fp32 peak {peak:g} TFLOP/s x {fraction:.1%}, "
                 f"the fraction of the H100's that fp32 U-Net training reached ({source})")


@dataclass(frozen=True)
class JobKind:
    """One job kind of an experiment: its runs, what one run's job does, and its FLOPs on a device."""

    experiment: str
    job: str
    runs: int
    each: str  # what one run's job does
    flops: float  # all runs together
    longest_flops: float  # the largest run's
    device: str  # "GPU" or "CPU x <threads>"
    rate: float  # FLOP/s of that device

    @property
    def hours(self) -> float:
        return self.flops / self.rate / 3600

    @property
    def longest_hours(self) -> float:
        return self.longest_flops / self.rate / 3600

    @property
    def threads(self) -> int:
        return int(self.device.split(" x ")[1]) if self.device.startswith("CPU") else 0


@dataclass(frozen=True)
class Disk:
    """Bytes an experiment's runs leave on disk, by kind (all runs together)."""

    experiment: str
    runs: int
    checkpoints_per_run: int
    checkpoints: float
    samples: float
    scores: float

    @property
    def total(self) -> float:
        return self.checkpoints + self.samples + self.scores


def checkpoint_bytes(exp: dict, params: int, checkpoints: int) -> float:
    """Bytes of one run's checkpoints under train.keep (module docstring)."""
    train = exp["train"]
    weights = 4 * params * (2 if train["ema_decay"] else 1)
    optimizer = 8 * params if train["optimizer"] == "adam" else (4 * params if train["momentum"] > 0 else 0)
    if train["keep"] == "all":
        return checkpoints * (weights + optimizer)
    if train["keep"] == "weights":
        return checkpoints * weights + weights + optimizer
    return checkpoints * weights


def plan_experiment(name: str, exp: dict, rates: Rates) -> tuple[list[JobKind], Disk, str]:
    """The job kinds, the disk and a one-line description of one (leaf) experiment of family network."""
    data, train, sample = exp["data"], exp["train"], exp["sample"]
    shape = data_shape(data)
    dim = math.prod(shape)
    size = model_size(exp["model"], shape)
    ns, seeds = list(data["n_train"]), list(data["seeds"])
    runs, checkpoints, num = len(ns) * len(seeds), len(checkpoint_grid(train)), sample["num_samples"]
    gpu, threads = rates.gpu_flops, exp["resources"].get("cpus_per_job") or 1
    cpu = (f"CPU x {threads}", threads * rates.cpu_flops)
    jobs = []
    for n in ns:
        batch = min(n, train["batch_size"])
        run = train["max_steps"] * train_step_flops(size, batch)
        jobs.append(JobKind(name, f"train n={n}", len(seeds), f"{train['max_steps']:,} steps x batch {batch}",
                            run * len(seeds), run, "GPU", gpu))
    evals = sampler_evals(exp["model"], sample)
    run = checkpoints * num * evals * size.flops
    jobs.append(JobKind(name, "sample", runs, f"{checkpoints} checkpoints x {num:,} samples x {evals} evaluations",
                        run * runs, run, "GPU", gpu))
    scores = [score_flops(checkpoints=checkpoints, num_samples=num, n=n, n_test=data["n_test"], dim=dim) for n in ns]
    where = cpu if exp["score"]["device"] == "cpu" else ("GPU", gpu)
    jobs.append(JobKind(name, "score", runs, f"{checkpoints * num:,} samples x (n + {data['n_test']:,}) points",
                        sum(scores) * len(seeds), max(scores), *where))
    images = inception_images(exp, checkpoints)
    if images:
        jobs.append(JobKind(name, "quality (FID)", runs, f"{images:,} images through Inception-v3",
                            images * INCEPTION_FLOPS * runs, images * INCEPTION_FLOPS, *cpu))
    disk = Disk(name, runs, checkpoints, runs * checkpoint_bytes(exp, size.params, checkpoints),
                runs * checkpoints * num * (4 * dim + DISTANCE_CACHE_BYTES), runs * 2 * checkpoints * num * SCORE_BYTES)
    grid = "explicit" if train["checkpoint_steps"] else train["checkpoint_grid"]
    per = f"{'x'.join(map(str, shape))} image" if len(shape) == 3 else f"{dim}-dimensional point"
    about = (f"{name}: {exp['model']['arch']}, {size.params:,} parameters, {size.flops / 1e9:.3g} GFLOP forward per "
             f"{per}; {runs} runs (n = {', '.join(map(str, ns))} x {len(seeds)} seeds), "
             f"{checkpoints} checkpoints ({grid} grid) to step {train['max_steps']:,}, train.keep {train['keep']}")
    return jobs, disk, about


def selected(cfg: dict, *, names: list[str] | None, every: bool) -> dict[str, dict]:
    """The (leaf) experiments to plan: `names`, every experiment, or those in `run`; sweeps expanded, twins added."""
    chosen = names or (list(cfg["experiments"]) if every else cfg["run"])
    leaves = expand_sweeps({name: cfg["experiments"][name] for name in chosen})
    leaves.update(twin_experiments(leaves))
    return leaves


def figure(x: float) -> str:
    """A number for the tables: whole with thousands separators from 100, else 3 significant digits."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def plan_report(leaves: dict[str, dict], rates: Rates) -> str:
    """The plan as text: the rates, one line per experiment, the compute and disk tables, the total line."""
    lines = [f"GPU rate: {rates.gpu_flops / 1e12:.3g} TFLOP/s, {rates.gpu_source}",
             f"CPU rate: {rates.cpu_flops / 1e9:g} GFLOP/s per thread (resources.CPU_GFLOPS_PER_THREAD: the rate the "
             "job requests are sized with, 2-4x below the measured matmul rate; --cpu-gflops)", ""]
    jobs, disks, skipped = [], [], []
    for name, exp in leaves.items():
        if exp["model"]["family"] != "network":
            skipped.append(name)
            continue
        kinds, disk, about = plan_experiment(name, exp, rates)
        jobs += kinds
        disks.append(disk)
        lines.append(about)
    if skipped:
        lines.append(f"not planned (no trained network; `diffmem resources` sizes their jobs): {', '.join(skipped)}")
    if not jobs:
        return "\n".join(lines)
    lines += ["", "| experiment | job | runs | each run | TFLOP | on | hours | longest job (h) |",
              "|---|---|---:|---|---:|---|---:|---:|"]
    lines += [f"| {j.experiment} | {j.job} | {j.runs} | {j.each} | {figure(j.flops / 1e12)} | {j.device} | "
              f"{figure(j.hours)} | {figure(j.longest_hours)} |" for j in jobs]
    lines += ["", "| experiment | runs | checkpoints per run | checkpoints (GB) | samples (GB) | scores + cube (GB) | "
              "disk (GB) |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {d.experiment} | {d.runs} | {d.checkpoints_per_run} | {figure(d.checkpoints / GB)} | "
              f"{figure(d.samples / GB)} | {figure(d.scores / GB)} | {figure(d.total / GB)} |" for d in disks]
    gpu = {}
    for j in jobs:
        if j.device == "GPU":
            kind = j.job.split()[0]
            gpu[kind] = gpu.get(kind, 0.0) + j.hours
    cpu_core_hours = sum(j.hours * j.threads for j in jobs if j.device != "GPU")
    split = ", ".join(f"{kind} {figure(hours)}" for kind, hours in gpu.items())
    lines += ["", f"total: {figure(sum(gpu.values()))} GPU-hours ({split}) + {figure(cpu_core_hours)} CPU core-hours; "
              f"disk {figure(sum(d.total for d in disks) / GB)} GB"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """`diffmem plan [config.yaml] [--all] [--experiment NAME ...] [--tflops X] [--gpu NAME]`."""
    parser = stage_parser("diffmem plan", __doc__, "diffmem.stages.plan")
    parser.add_argument("config", nargs="?", default="config.yaml")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every experiment, not only those in `run`")
    which.add_argument("--experiment", nargs="+", action="extend", metavar="NAME", help="these experiments")
    parser.add_argument("--tflops", type=float, default=None, help="the GPU's achieved TFLOP/s")
    parser.add_argument("--gpu", default=None, help="scale the measured H100 rate to this GPU (H200, A100, ...)")
    parser.add_argument("--cpu-gflops", type=float, default=CPU_GFLOPS_PER_THREAD, help="GFLOP/s per CPU thread")
    args = parser.parse_args(argv)
    for flag, value in (("--tflops", args.tflops), ("--cpu-gflops", args.cpu_gflops)):
        if value is not None and not value > 0:
            fail(f"{flag} must be a positive rate, got {value:g}")
    try:
        rates = device_rates(tflops=args.tflops, gpu=args.gpu, cpu_gflops=args.cpu_gflops)
        cfg = load_config(args.config)
    except (ValueError, ConfigError) as exc:
        fail(str(exc))
    unknown = [name for name in args.experiment or [] if name not in cfg["experiments"]]
    if unknown:
        fail(f"experiment '{unknown[0]}' is not defined in {args.config} (defined: {', '.join(cfg['experiments'])})")
    try:
        print(plan_report(selected(cfg, names=args.experiment, every=args.all), rates))
    except ConfigError as exc:  # an image folder whose shape cannot be read
        fail(str(exc))


if __name__ == "__main__":
    main(sys.argv[1:])
