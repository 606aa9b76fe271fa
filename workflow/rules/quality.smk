# Sample quality per checkpoint (FD/KID in feature spaces, exact metrics on synthetic data,
# E_TG/E_OG). Only experiments with quality.enabled request these files.
rule classifier:
    input:
        R("{exp}/data/dataset.npz"),
    output:
        R("{exp}/classifier/classifier.pt"),
    params:
        quality=classifier_slice,
    threads: job_cpus
    resources:
        mem_mb=resource("quality_mem_mb"),
        runtime=resource("quality_runtime_min"),
        cpus_per_task=job_cpus,
    log:
        R("{exp}/logs/classifier.log"),
    benchmark:
        R("{exp}/benchmarks/classifier.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem classifier --dataset {input} --quality-cfg {params.quality} --out {output} > {log} 2>&1"


# One job per (n, seed) run here, or one per training group for an experiment with train.group_evaluation
# (evaluate_grouped.smk); the command (QUALITY_SHELL) is in common.smk.
rule quality:
    wildcard_constraints:
        exp=PER_RUN_EVALUATION_EXPS,
    input:
        unpack(quality_inputs),
    output:
        RUN("quality.nc"),
    params:
        data=data_slice,
        content=quality_content,  # tracked: the quality slice with the sha256 of quality.inception_weights
        quality=untracked(section("quality")),
        metrics=optional_input_arg("train-metrics", "metrics"),
        checkpoints=optional_input_arg("checkpoints", "checkpoints"),
        classifier=optional_input_arg("classifier", "classifier"),
    threads: job_cpus
    resources:
        mem_mb=resource("quality_mem_mb"),
        runtime=resource("quality_runtime_min"),
        cpus_per_task=job_cpus,
    log:
        R("{exp}/logs/quality/n{n}_seed{seed}.log"),
    benchmark:
        R("{exp}/benchmarks/quality/n{n}_seed{seed}.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        QUALITY_SHELL
