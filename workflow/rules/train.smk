# Training: one command, `diffmem train` (src/diffmem/stages/train.py over src/diffmem/engine.py, one engine that trains a stack of
# k >= 1 runs), for the per-(n, seed) rules below and the grouped rules of train_grouped.smk.
# Outputs: train_metrics.nc and the run's checkpoint folder runs/n{n}_seed{seed}/checkpoints/, which
# holds what train.keep keeps (src/diffmem/checkpoint.py). The folder is update() (kept before a rerun,
# so a raised max_steps continues from it) or, under train.keep: sampling, temp(); since a rule's
# output flags are fixed, there is one rule per kind: `train` and `train_transient`. While a run
# trains, its state is in checkpoints.partial/ beside it, which Snakemake does not know and so never
# deletes under a failed or preempted job; the job moves it into checkpoints/ when the run finishes.
# Tracked params are the model and train slices, the same in both kinds of rule and in the grouped
# rules, so turning grouping on or off reruns nothing (docs/reruns.md); train.keep is a run setting.
# The command and the param functions are in common.smk.
for _name, _exps, _kept in (("train", UNGROUPED_KEPT_EXPS, True), ("train_transient", UNGROUPED_TRANSIENT_EXPS, False)):

    rule:
        name:
            _name
        wildcard_constraints:
            exp=_exps,
        input:
            train=RUN("train.npz"),
            dataset=R("{exp}/data/dataset.npz"),
        output:
            metrics=RUN("train_metrics.nc"),
            checkpoints=checkpoint_folder(RUN("checkpoints"), _kept),
        params:
            model=model_slice,
            train=section("train"),
            run=run_settings("train"),
            seeds=train_seeds,
        threads: train_threads
        resources:
            mem_mb=resource("train_mem_mb"),
            runtime=resource("train_runtime_min"),
            cpus_per_task=train_threads,
            gpu=resource("gpus_per_train_job"),
        log:
            R("{exp}/logs/train/n{n}_seed{seed}.log"),
        benchmark:
            R("{exp}/benchmarks/train/n{n}_seed{seed}.tsv"),
        conda:
            "../../envs/diffmem.yaml"
        shell:
            TRAIN_SHELL
