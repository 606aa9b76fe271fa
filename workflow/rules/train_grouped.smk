# Grouped training: for an experiment with `train.grouped: true`, one job per (experiment, n) trains
# every seed of that n as one batched computation (`python -m diffmem.grouped`, see grouped.py).
# Each seed keeps its own train_metrics.nc, log-free checkpoints under state/n{n}_seed{seed}/ and
# trajectory hash, exactly as the per-(n, seed) `train` rule writes them, so sample, score and cube
# are unchanged and either rule resumes the other's checkpoints.
# One job has one output per seed, and the seeds differ by experiment, so the rules are generated
# here with concrete file lists (the `name:` directive) rather than written with wildcards.
# Resources are the experiment's `resources:` as for `train`; grouped rules cannot be named in a
# profile's set-resources (their names depend on the config), so they take the default-resources.
for _exp, _n in grouped_train_jobs():
    _seeds = EXPERIMENTS[_exp]["data"]["seeds"]
    _cfg = EXPERIMENTS[_exp]

    rule:
        name:
            grouped_rule_name(_exp, _n)
        input:
            train=[R(f"{_exp}/runs/n{_n}_seed{s}/train.npz") for s in _seeds],
            dataset=R(f"{_exp}/data/dataset.npz"),
        output:
            [R(f"{_exp}/runs/n{_n}_seed{s}/train_metrics.nc") for s in _seeds],
        params:
            model=as_arg(family_model(_cfg["model"])),
            train=as_arg(_cfg["train"]),
            seeds=_seeds,
            states=[R(f"{_exp}/state/n{_n}_seed{s}") for s in _seeds],
        threads: _cfg["train"]["threads"]
        resources:
            mem_mb=_cfg["resources"]["train_mem_mb"],
            runtime=_cfg["resources"]["train_runtime_min"],
            gpu=_cfg["resources"]["gpus_per_train_job"],
        log:
            R(f"{_exp}/logs/train/n{_n}_grouped.log"),
        conda:
            "../../envs/diffmem.yaml"
        shell:
            "python -m diffmem.grouped --train {input.train} --seeds {params.seeds} --dataset {input.dataset}"
            " --model {params.model} --train-cfg {params.train} --state-roots {params.states}"
            " --outs {output} > {log} 2>&1"
