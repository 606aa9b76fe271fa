rule fit:
    wildcard_constraints:
        exp=SAMPLED_EXPS,
    input:
        R("{exp}/cube.nc"),
    output:
        R("{exp}/fit.nc"),
    params:
        fit=section("fit"),
    resources:
        **SMALL_JOB,
    log:
        R("{exp}/logs/fit.log"),
    benchmark:
        R("{exp}/benchmarks/fit.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem fit --cube {input} --fit-cfg {params.fit} --out {output} > {log} 2>&1"
