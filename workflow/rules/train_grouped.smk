# Grouped training: for an experiment with `train.grouped` on (true, or auto with
# resources.gpus_per_train_job > 0), one job trains a group of (n, seed) runs as one stack, with
# the per-run rule's command (TRAIN_SHELL in common.smk) given several runs: all seeds of one n
# (train.group_by: n), all n of one seed (seed) or every run (experiment), split into jobs of at
# most train.max_group.
# Each run keeps its own train_metrics.nc, checkpoint folder runs/n{n}_seed{seed}/checkpoints/ and
# trajectory hash, exactly as the per-(n, seed) `train` rule writes them, so sample, score and cube are
# unchanged and either rule resumes the other's checkpoints.
# One job has one output per member, and the members differ by experiment, so the rules are
# generated here with concrete file lists (the `name:` directive) rather than written with wildcards.
# Tracked params are those of the per-(n, seed) `train` rule (the seeds derive from the outputs), so regrouping reruns nothing. Resources are the experiment's `resources:`, with unset
# training requests sized for the largest group; grouped rules cannot be named in a profile's
# set-resources (their names depend on the config), so a profile reaches them through default-resources.
for _exp, _label, _members in grouped_train_jobs():
    _cfg = EXPERIMENTS[_exp]
    _runs = [f"{_exp}/runs/n{n}_seed{s}" for n, s in _members]

    rule:
        name:
            grouped_rule_name(_exp, _label)
        input:
            # ancient: a member's train.npz may be newer than another member's train_metrics.nc when
            # the runs were trained apart (or in other groups); that is no reason to retrain. A new
            # training subset always comes with a new dataset.npz, which still triggers the job.
            train=[ancient(R(f"{run}/train.npz")) for run in _runs],
            dataset=R(f"{_exp}/data/dataset.npz"),
        output:
            metrics=[R(f"{run}/train_metrics.nc") for run in _runs],
            checkpoints=[checkpoint_folder(R(f"{run}/checkpoints"), keeps_checkpoints(_exp)) for run in _runs],
        params:
            model=as_arg(family_model(_cfg["model"])),
            train=as_arg(result_slice(_exp, "train")),
            run=run_settings("train", _exp),
            seeds=train_seeds,
        threads: _cfg["train"]["threads"]
        resources:
            mem_mb=_cfg["resources"]["train_mem_mb"],
            runtime=_cfg["resources"]["train_runtime_min"],
            gpu=_cfg["resources"]["gpus_per_train_job"],
            cpus_per_task=_cfg["train"]["threads"],
        log:
            R(f"{_exp}/logs/train/grouped_{_label}.log"),
        benchmark:
            R(f"{_exp}/benchmarks/train/grouped_{_label}.tsv"),
        conda:
            "../../envs/diffmem.yaml"
        shell:
            TRAIN_SHELL
