# Checkpoints live under state/ (not a declared output): Snakemake deletes a job's outputs
# before rerunning it, and a raised max_steps must resume from them instead of starting over.
# The params are exactly those of the grouped rules (train_grouped.smk; the state folder is in the
# command, not a param), so turning grouping on or off reruns nothing (README, "What reruns").
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
        "diffmem train --train {input.train} --dataset {input.dataset} --model {params.model}"
        f" --train-cfg {{params.train}} --seed {{wildcards.seed}} --state-root {RESULTS}/{{wildcards.exp}}/state/"
        "n{wildcards.n}_seed{wildcards.seed} --out {output} > {log} 2>&1"
