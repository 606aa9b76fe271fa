# Grouped evaluation: for an experiment with `train.group_evaluation` on, one job per training group
# (train.group_by, max_group, the groups of train_grouped.smk whether or not training is grouped) and per
# stage samples, scores or measures the quality of its runs one after another in one process, with the
# per-run rules' commands (SAMPLE_SHELL, SCORE_SHELL, QUALITY_SHELL in common.smk) given several runs.
# Each run's samples.json, scores.nc and quality.nc, and the caches beside its samples, are exactly what
# its own jobs write; what a group saves is the process start of every job but one (torch, xarray: 3-5
# CPU-seconds each on a CPU) and Snakemake's work per job. A group is its members' unit of rerun and of
# failure: a failed member fails the group's job (the caches keep what the others computed).
# Tracked params are those of the per-run rules, and each member's inputs are compared by mtime with its own
# outputs only (own_mtime in common.smk), so turning grouping on or off reruns nothing. The
# requests are the per-run rule's, with the runtime times the group's size; like the grouped training
# rules, these cannot be named in a profile's set-resources (their names depend on the config).
for _exp, _label, _members in grouped_evaluation_jobs():
    _res = EXPERIMENTS[_exp]["resources"]
    _runs = [f"{_exp}/runs/n{n}_seed{s}" for n, s in _members]
    _as = SimpleNamespace(exp=_exp)  # the wildcards of the per-run rules' param functions
    _samples, _scores = run_files(_runs, "samples.json"), run_files(_runs, "scores.nc")

    rule:
        name:
            generated_rule_name("sample_grouped_", _exp, f"_{_label}")
        input:
            metrics=own_mtime(run_files(_runs, "train_metrics.nc"), _samples),
            checkpoints=own_mtime(run_files(_runs, "checkpoints"), _samples),
        output:
            _samples,
        params:
            sample=section("sample")(_as),
            run=run_settings("sample", _exp),
            device=sample_device(_exp),
        threads: _res["cpus_per_job"]
        resources:
            mem_mb=_res["sample_mem_mb"],
            runtime=_res["sample_runtime_min"] * len(_runs),
            cpus_per_task=_res["cpus_per_job"],
            gpu=_res["gpus_per_train_job"],
        log:
            R(f"{_exp}/logs/sample/grouped_{_label}.log"),
        benchmark:
            R(f"{_exp}/benchmarks/sample/grouped_{_label}.tsv"),
        conda:
            "../../envs/diffmem.yaml"
        shell:
            SAMPLE_SHELL

    rule:
        name:
            generated_rule_name("score_grouped_", _exp, f"_{_label}")
        input:
            samples=own_mtime(_samples, _scores),
            train=own_mtime(run_files(_runs, "train.npz"), _scores),
            dataset=R(f"{_exp}/data/dataset.npz"),
        output:
            _scores,
        params:
            score=section("score")(_as),
            run=run_settings("score", _exp),
        threads: _res["cpus_per_job"]
        resources:
            mem_mb=_res["score_mem_mb"],
            runtime=_res["score_runtime_min"] * len(_runs),
            cpus_per_task=_res["cpus_per_job"],
        log:
            R(f"{_exp}/logs/score/grouped_{_label}.log"),
        benchmark:
            R(f"{_exp}/benchmarks/score/grouped_{_label}.tsv"),
        conda:
            "../../envs/diffmem.yaml"
        shell:
            SCORE_SHELL

    if quality_enabled(_exp):

        rule:
            name:
                generated_rule_name("quality_grouped_", _exp, f"_{_label}")
            input:
                **grouped_quality_inputs(_exp, _runs),
            output:
                run_files(_runs, "quality.nc"),
            params:
                data=data_slice(_as),
                content=quality_content(_as),  # tracked, as in the per-run rule
                quality=untracked(section("quality"), _exp),
                metrics=optional_input_arg("train-metrics", "metrics"),
                checkpoints=optional_input_arg("checkpoints", "checkpoints"),
                classifier=optional_input_arg("classifier", "classifier"),
            threads: _res["cpus_per_job"]
            resources:
                mem_mb=_res["quality_mem_mb"],
                runtime=_res["quality_runtime_min"] * len(_runs),
                cpus_per_task=_res["cpus_per_job"],
            log:
                R(f"{_exp}/logs/quality/grouped_{_label}.log"),
            benchmark:
                R(f"{_exp}/benchmarks/quality/grouped_{_label}.tsv"),
            conda:
                "../../envs/diffmem.yaml"
            shell:
                QUALITY_SHELL
