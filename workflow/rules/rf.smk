# Family random_features (Bonnaire et al. 2025, Sect. 3): the score model is trained at one diffusion
# time on isotropic Gaussian data and tracked by its train loss, test loss and error to the exact score;
# it generates no samples, so its runs skip sample / score / quality. The fit measures the time where
# train and test loss separate against psi_n = n / d, with the paper's theory overlaid.
rule rf_train:
    wildcard_constraints:
        exp=RF_EXPS,
    input:
        train=RUN("train.npz"),
        dataset=R("{exp}/data/dataset.npz"),
    output:
        RUN("rf_metrics.nc"),
    params:
        model=rf_model_slice,
        train=section("train"),
        run=run_settings("train"),
    threads: train_threads
    resources:
        mem_mb=resource("train_mem_mb"),
        runtime=resource("train_runtime_min"),
        cpus_per_task=train_threads,
    log:
        R("{exp}/logs/train/n{n}_seed{seed}.log"),
    benchmark:
        R("{exp}/benchmarks/train/n{n}_seed{seed}.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem rf-train --train {input.train} --dataset {input.dataset} --model {params.model}"
        " --train-cfg {params.train} --run-settings {params.run} --seed {wildcards.seed} --out {output} > {log} 2>&1"


rule rf_cube:
    wildcard_constraints:
        exp=RF_EXPS,
    input:
        lambda wildcards: runs(wildcards.exp, RUN("rf_metrics.nc")),
    output:
        R("{exp}/cube.nc"),
    params:
        runs=run_grid,
    resources:
        **SMALL_JOB,
    log:
        R("{exp}/logs/cube.log"),
    benchmark:
        R("{exp}/benchmarks/cube.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem cube --train-metrics {input} --experiment {wildcards.exp}"
        " --out {output} > {log} 2>&1"


rule rf_fit:
    wildcard_constraints:
        exp=RF_EXPS,
    input:
        R("{exp}/cube.nc"),
    output:
        R("{exp}/fit.nc"),
    params:
        model=rf_model_slice,
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
        "diffmem rf-fit --cube {input} --model {params.model} --fit-cfg {params.fit} --out {output} > {log} 2>&1"


rule rf_plot:
    wildcard_constraints:
        exp=RF_EXPS,
    input:
        cube=R("{exp}/cube.nc"),
        fit=R("{exp}/fit.nc"),
    output:
        [report(R(f"{{exp}}/figures/{name}.png"), caption=f"../report/{name}.rst", category="{exp}") for name in RF_FIGURES],
    params:
        outdir=R("{exp}/figures"),
    resources:
        **SMALL_JOB,
    log:
        R("{exp}/logs/plot.log"),
    benchmark:
        R("{exp}/benchmarks/plot.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem rf-plot --cube {input.cube} --fit {input.fit} --outdir {params.outdir}"
        " --title {wildcards.exp} > {log} 2>&1"


rule rf_compare:
    wildcard_constraints:
        exp=RF_EXPS,
    input:
        fits=lambda wildcards: [R(f"{e}/fit.nc") for e in rf_compared(wildcards)],
        cubes=lambda wildcards: [R(f"{e}/cube.nc") for e in rf_compared(wildcards)],
    output:
        report(R("{exp}/figures/rf_compare.png"), caption="../report/rf_compare.rst", category="{exp}"),
    params:
        labels=lambda wildcards: " ".join(rf_compared(wildcards)),
    resources:
        **SMALL_JOB,
    log:
        R("{exp}/logs/rf_compare.log"),
    benchmark:
        R("{exp}/benchmarks/rf_compare.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem rf-compare --fits {input.fits} --cubes {input.cubes} --labels {params.labels}"
        " --out {output} --title {wildcards.exp} > {log} 2>&1"
