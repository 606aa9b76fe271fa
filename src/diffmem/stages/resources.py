"""`diffmem resources [config.yaml] [--gpus-per-train-job N] [--all]`: what each experiment's jobs
will request from the scheduler, before submitting (the sizing rules are in `diffmem.resources`)."""

from __future__ import annotations

import sys

from diffmem.config import ConfigError, expand_sweeps, load_config, size_experiment, training_groups, twin_experiments
from diffmem.io import fail
from diffmem.stages import stage_parser


def _runtime(minutes: int) -> str:
    return f"{minutes // 60}:{minutes % 60:02d}"


def request_table(cfg: dict, names: list[str]) -> str:
    """A markdown table of what each experiment's jobs ask the scheduler for (a resolved config)."""
    leaves = expand_sweeps({name: cfg["experiments"][name] for name in names})
    leaves.update(twin_experiments(leaves))  # data.twin: the twin runs are jobs too (<name>/twin)
    rows = ["| experiment | runs | training jobs x members | train mem (MB) / time (h:mm) | gpus | "
            "sample mem / time | score mem / time | training GPU-hours requested |",
            "|---|---:|---|---|---:|---|---|---:|"]
    for name, exp in leaves.items():
        res = size_experiment(exp)["resources"]
        runs = len(exp["data"]["n_train"]) * len(exp["data"]["seeds"])
        family = exp["model"]["family"]
        if family != "network" and family != "random_features":
            jobs, gpu_hours = "none (closed form)", 0.0
        elif exp["train"]["grouped"] is True:
            sizes = [len(members) for _, members in training_groups(exp)]
            jobs = f"{len(sizes)} x {max(sizes)}" if len(set(sizes)) == 1 else f"{len(sizes)} x {min(sizes)}-{max(sizes)}"
            gpu_hours = len(sizes) * res["gpus_per_train_job"] * res["train_runtime_min"] / 60
        else:
            jobs = f"{runs} x 1"
            gpu_hours = runs * res["gpus_per_train_job"] * res["train_runtime_min"] / 60
        train = "—" if gpu_hours == 0.0 and jobs.startswith("none") else \
            f"{res['train_mem_mb']} / {_runtime(res['train_runtime_min'])}"
        # train.group_evaluation: one sample and one score job per training group, requesting the runtime of its runs
        per_job = max(len(m) for _, m in training_groups(exp)) if exp["train"].get("group_evaluation") else 1
        grouped = f" (jobs of up to {per_job} runs)" if per_job > 1 else ""
        rows.append(
            f"| {name} | {runs} | {jobs} | {train} | {res['gpus_per_train_job']} | "
            f"{res['sample_mem_mb']} / {_runtime(per_job * res['sample_runtime_min'])}{grouped} | "
            f"{res['score_mem_mb']} / {_runtime(per_job * res['score_runtime_min'])}{grouped} | {gpu_hours:.1f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """`diffmem resources [config.yaml] [--gpus-per-train-job N] [--all]`: the requests, before submitting."""
    parser = stage_parser("diffmem resources", __doc__, "diffmem.stages.resources")
    parser.add_argument("config", nargs="?", default="config.yaml")
    parser.add_argument("--gpus-per-train-job", type=int, default=None,
                        help="as --config gpus_per_train_job=N (what the SLURM profile sets to 1)")
    parser.add_argument("--all", action="store_true", help="every experiment, not only those in `run`")
    args = parser.parse_args(argv)
    overrides = {} if args.gpus_per_train_job is None else {"gpus_per_train_job": args.gpus_per_train_job}
    try:
        cfg = load_config(args.config, **overrides)
    except ConfigError as exc:
        fail(str(exc))
    print(request_table(cfg, list(cfg["experiments"]) if args.all else cfg["run"]))


if __name__ == "__main__":
    main(sys.argv[1:])
