# tau_mem and its exponent in n against the training length (fit.horizons, diffmem.horizons): the runs
# of the experiment read as if training had stopped at each horizon S (constant learning rate: a run to
# S is the first S steps of a longer one). Only experiments that set fit.horizons get these files.
rule horizons:
    wildcard_constraints:
        exp=SAMPLED_EXPS,
    input:
        R("{exp}/cube.nc"),
    output:
        R("{exp}/horizons.nc"),
    params:
        fit=section("fit"),
    resources:
        **SMALL_JOB,
    log:
        R("{exp}/logs/horizons.log"),
    benchmark:
        R("{exp}/benchmarks/horizons.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem horizons-fit --cube {input} --fit-cfg {params.fit} --out {output} > {log} 2>&1"


rule horizons_figure:
    wildcard_constraints:
        exp=SAMPLED_EXPS,
    input:
        cube=R("{exp}/cube.nc"),
        horizons=R("{exp}/horizons.nc"),
    output:
        report(R("{exp}/figures/horizons.png"), caption="../report/horizons.rst", category="{exp}"),
    resources:
        **SMALL_JOB,
    log:
        R("{exp}/logs/plot/horizons.log"),
    benchmark:
        R("{exp}/benchmarks/plot/horizons.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem horizons-plot --cube {input.cube} --horizons {input.horizons} --out {output}"
        " --title {wildcards.exp} > {log} 2>&1"
