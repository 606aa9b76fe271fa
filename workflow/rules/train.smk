# Training: one command, `diffmem train` (src/diffmem/stages/train.py over src/diffmem/engine.py, one engine that trains a stack of
# k >= 1 runs), for the per-(n, seed) rule below and the grouped rules of train_grouped.smk.
# Checkpoints live under state/ (not a declared output): Snakemake deletes a job's outputs before
# rerunning it, and a raised max_steps must resume from them instead of starting over.
# Tracked params are the model and train slices, the same in both kinds of rule, so turning grouping
# on or off reruns nothing (docs/reruns.md). Each run's seed and state folder derive from its
# output (`train_member`): params that take `output` are looked up when the job runs and are not
# rerun triggers; the seed is in the output path anyway.
# The command, the members' map and the param functions are in common.smk.
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
        run=run_settings("train"),
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
