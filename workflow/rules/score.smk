rule score:
    input:
        samples=RUN("samples.json"),
        train=RUN("train.npz"),
        dataset=R("{exp}/data/dataset.npz"),
    output:
        RUN("scores.nc"),
    params:
        score=section("score"),
    threads: job_cpus
    resources:
        mem_mb=resource("score_mem_mb"),
        runtime=resource("score_runtime_min"),
        cpus_per_task=job_cpus,
    log:
        R("{exp}/logs/score/n{n}_seed{seed}.log"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem score --samples {input.samples} --train {input.train} --dataset {input.dataset}"
        " --score-cfg {params.score} --out {output} > {log} 2>&1"


rule cube:
    wildcard_constraints:
        exp=SAMPLED_EXPS,
    input:
        unpack(cube_inputs),
    output:
        R("{exp}/cube.nc"),
    params:
        config_hash=upstream_hash,
        quality=lambda wildcards, input: f"--quality {' '.join(input.quality)}" if "quality" in input.keys() else "",
        metrics=lambda wildcards, input: f"--train-metrics {' '.join(input.metrics)}" if "metrics" in input.keys() else "",
        closed=lambda wildcards: "--closed-form" if is_closed_form(wildcards.exp) else "",
        twin=lambda wildcards, input: f"--twin {' '.join(input.twin)}" if "twin" in input.keys() else "",
    resources:
        mem_mb=resource("small_mem_mb"),
        runtime=resource("small_runtime_min"),
        cpus_per_task=1,
    log:
        R("{exp}/logs/cube.log"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem cube --scores {input.scores} {params.metrics} {params.quality} {params.closed} {params.twin}"
        " --config-hash {params.config_hash} --experiment {wildcards.exp} --out {output} > {log} 2>&1"
