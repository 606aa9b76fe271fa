# Training: one command, `diffmem train` (src/diffmem/train.py, one engine that trains a stack of
# k >= 1 runs), for the per-(n, seed) rule below and the grouped rules of train_grouped.smk.
# Checkpoints live under state/ (not a declared output): Snakemake deletes a job's outputs before
# rerunning it, and a raised max_steps must resume from them instead of starting over.
# Tracked params are the model and train slices, the same in both kinds of rule, so turning grouping
# on or off reruns nothing (README, "What reruns"). Each run's seed and state folder derive from its
# output (`train_member`): params that take `output` are looked up when the job runs and are not
# rerun triggers; the seed is in the output path anyway.
from pathlib import Path

TRAIN_SHELL = (
    "diffmem train --train {input.train} --dataset {input.dataset} --model {params.model}"
    " --train-cfg {params.train} --seed {params.seeds} --state-root {params.states} --out {output} > {log} 2>&1"
)
GROUP_MEMBER = {}  # train_metrics.nc of a grouped run -> (seed, state folder); filled by train_grouped.smk


def train_member(out):
    """(seed, state folder) of the run whose train_metrics.nc is `out`."""
    if out in GROUP_MEMBER:
        return GROUP_MEMBER[out]
    run = Path(out).parent  # <results>/<exp>/runs/n{n}_seed{seed}
    seed = int(run.name.rsplit("_seed", 1)[1])
    return seed, str(run.parent.parent / "state" / run.name)


def train_seeds(wildcards, output):
    return " ".join(str(train_member(out)[0]) for out in output)


def train_states(wildcards, output):
    return " ".join(train_member(out)[1] for out in output)


rule train:
    wildcard_constraints:
        exp=UNGROUPED_EXPS,
    input:
        train=RUN("train.npz"),
        dataset=R("{exp}/data/dataset.npz"),
    output:
        RUN("train_metrics.nc"),
    params:
        model=model_slice,
        train=section("train"),
        seeds=train_seeds,
        states=train_states,
    threads: train_threads
    resources:
        mem_mb=resource("train_mem_mb"),
        runtime=resource("train_runtime_min"),
        cpus_per_task=train_threads,
        gpu=resource("gpus_per_train_job"),
    log:
        R("{exp}/logs/train/n{n}_seed{seed}.log"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        TRAIN_SHELL
