# Sampling of trained runs: one job per (n, seed) run here, or one per training group for an experiment with
# train.group_evaluation (evaluate_grouped.smk); the command (SAMPLE_SHELL) is in common.smk.
rule sample:
    wildcard_constraints:
        exp=PER_RUN_SAMPLED_TRAINED_EXPS,
    input:
        metrics=RUN("train_metrics.nc"),
        checkpoints=RUN("checkpoints"),
    output:
        RUN("samples.json"),
    params:
        sample=section("sample"),
        run=run_settings("sample"),
        device=sample_device(),
    threads: job_cpus
    resources:
        mem_mb=resource("sample_mem_mb"),
        runtime=resource("sample_runtime_min"),
        cpus_per_task=job_cpus,
        gpu=resource("gpus_per_train_job"),
    log:
        R("{exp}/logs/sample/n{n}_seed{seed}.log"),
    benchmark:
        R("{exp}/benchmarks/sample/n{n}_seed{seed}.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        SAMPLE_SHELL


# Closed-form families (empirical, linear): the denoiser is computed from the training set, so there is
# no training job; the run's single "checkpoint" is step 0.
rule closed_form_sample:
    wildcard_constraints:
        exp=CLOSED_FORM_EXPS,
    input:
        RUN("train.npz"),
    output:
        RUN("samples.json"),
    params:
        model=model_slice,
        sample=section("sample"),
        run=run_settings("sample"),
        run_dir=lambda wildcards, output: str(Path(output[0]).parent),  # the run's folder: its samples/ cache
    threads: job_cpus
    resources:
        mem_mb=resource("sample_mem_mb"),
        runtime=resource("sample_runtime_min"),
        cpus_per_task=job_cpus,
    log:
        R("{exp}/logs/sample/n{n}_seed{seed}.log"),
    benchmark:
        R("{exp}/benchmarks/sample/n{n}_seed{seed}.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem closed-form-sample --train {input} --model {params.model} --sample-cfg {params.sample}"
        " --run-settings {params.run} --run-dir {params.run_dir} --n {wildcards.n} --seed {wildcards.seed} --out {output} > {log} 2>&1"
