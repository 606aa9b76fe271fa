# Scoring: one job per (n, seed) run here, or one per training group for an experiment with
# train.group_evaluation (evaluate_grouped.smk); the command (SCORE_SHELL) is in common.smk.
rule score:
    wildcard_constraints:
        exp=PER_RUN_EVALUATION_EXPS,
    input:
        samples=RUN("samples.json"),
        train=RUN("train.npz"),
        dataset=R("{exp}/data/dataset.npz"),
    output:
        RUN("scores.nc"),
    params:
        score=section("score"),
        run=run_settings("score"),
    threads: job_cpus
    resources:
        mem_mb=resource("score_mem_mb"),
        runtime=resource("score_runtime_min"),
        cpus_per_task=job_cpus,
    log:
        R("{exp}/logs/score/n{n}_seed{seed}.log"),
    benchmark:
        R("{exp}/benchmarks/score/n{n}_seed{seed}.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        SCORE_SHELL
