rule score:
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
        "diffmem score --samples {input.samples} --train {input.train} --dataset {input.dataset}"
        " --score-cfg {params.score} --run-settings {params.run} --out {output} > {log} 2>&1"
