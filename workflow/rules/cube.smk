# One cube per experiment: every run's scores (and training metrics, quality) on (n, seed, step).
rule cube:
    wildcard_constraints:
        exp=SAMPLED_EXPS,
    input:
        unpack(cube_inputs),
    output:
        R("{exp}/cube.nc"),
    params:
        runs=run_grid,
        quality=lambda wildcards, input: f"--quality {' '.join(input.quality)}" if "quality" in input.keys() else "",
        metrics=lambda wildcards, input: f"--train-metrics {' '.join(input.metrics)}" if "metrics" in input.keys() else "",
        closed=lambda wildcards: "--closed-form" if is_closed_form(wildcards.exp) else "",
        twin=lambda wildcards, input: f"--twin {' '.join(input.twin)}" if "twin" in input.keys() else "",
    resources:
        **SMALL_JOB,
    log:
        R("{exp}/logs/cube.log"),
    benchmark:
        R("{exp}/benchmarks/cube.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem cube --scores {input.scores} {params.metrics} {params.quality} {params.closed} {params.twin}"
        " --experiment {wildcards.exp} --out {output} > {log} 2>&1"
