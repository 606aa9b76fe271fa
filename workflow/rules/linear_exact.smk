# Family linear_exact (Halder & Pehlevan's linear models in closed form, docs/results/linear.md): one job
# per dimension d computes every (n, repeat) -- fitted denoiser, generated Gaussian, closed-form L2
# E_TG / E_OG -- in numpy; no data, training or sampling stages. One rule stacks the d's, one fits n_half
# against d, one draws the figures.


rule linear_exact_run:
    wildcard_constraints:
        exp=LINEAR_EXACT_EXPS,
        d=r"\d+",
    output:
        R("{exp}/dims/d{d}.nc"),
    params:
        # without linear_dims: adding a dimension runs only that dimension
        model=lambda wildcards: as_arg(without_quiet_defaults("model", {
            k: v for k, v in family_model(exp_cfg(wildcards)["model"]).items() if k != "linear_dims"})),
        data=section("data"),
        quality=section("quality"),
        sample=section("sample"),
    resources:
        mem_mb=resource("small_mem_mb"),
        runtime=resource("train_runtime_min"),
        cpus_per_task=1,
    log:
        R("{exp}/logs/linear_exact/d{d}.log"),
    benchmark:
        R("{exp}/benchmarks/linear_exact/d{d}.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem linear-exact run --dim {wildcards.d} --model {params.model} --data {params.data}"
        " --quality {params.quality} --sample-cfg {params.sample} --out {output} > {log} 2>&1"


rule linear_exact_cube:
    wildcard_constraints:
        exp=LINEAR_EXACT_EXPS,
    input:
        linear_exact_parts,
    output:
        R("{exp}/cube.nc"),
    params:
        # the input trigger is off (profiles/default): the list of dimensions reruns the stacking
        dims=lambda wildcards: EXPERIMENTS[wildcards.exp]["model"]["linear_dims"],
    resources:
        **SMALL_JOB,
    log:
        R("{exp}/logs/cube.log"),
    benchmark:
        R("{exp}/benchmarks/cube.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem linear-exact cube --parts {input} --experiment {wildcards.exp} --out {output} > {log} 2>&1"


rule linear_exact_fit:
    wildcard_constraints:
        exp=LINEAR_EXACT_EXPS,
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
        "diffmem linear-exact fit --cube {input} --fit-cfg {params.fit} --out {output} > {log} 2>&1"


rule linear_exact_plot:
    wildcard_constraints:
        exp=LINEAR_EXACT_EXPS,
    input:
        cube=R("{exp}/cube.nc"),
        fit=R("{exp}/fit.nc"),
    output:
        [
            report(R(f"{{exp}}/figures/{name}.png"), caption=f"../report/{name}.rst", category="{exp}")
            for name in LINEAR_EXACT_FIGURES
        ],
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
        "diffmem linear-exact plot --cube {input.cube} --fit {input.fit} --outdir {params.outdir}"
        " --title {wildcards.exp} > {log} 2>&1"
