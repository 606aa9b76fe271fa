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
        mem_mb=resource("small_mem_mb"),
        runtime=resource("small_runtime_min"),
        cpus_per_task=1,
    log:
        R("{exp}/logs/fit.log"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem fit --cube {input} --fit-cfg {params.fit} --out {output} > {log} 2>&1"


rule plot:
    wildcard_constraints:
        exp=TRAINED_EXPS,
    input:
        cube=R("{exp}/cube.nc"),
        fit=R("{exp}/fit.nc"),
    output:
        [R(f"{{exp}}/figures/{name}.png") for name in FIGURES],
    params:
        outdir=R("{exp}/figures"),
    resources:
        mem_mb=resource("small_mem_mb"),
        runtime=resource("small_runtime_min"),
        cpus_per_task=1,
    log:
        R("{exp}/logs/plot.log"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem plot --cube {input.cube} --fit {input.fit} --outdir {params.outdir}"
        " --title {wildcards.exp} > {log} 2>&1"


rule plot_quality:
    wildcard_constraints:
        exp=TRAINED_EXPS,
    input:
        cube=R("{exp}/cube.nc"),
        fit=R("{exp}/fit.nc"),
    output:
        [R(f"{{exp}}/figures/{name}.png") for name in QUALITY_FIGURES],
    params:
        outdir=R("{exp}/figures"),
        dim=lambda wildcards: f"--data-dim {data_dim(wildcards.exp)}" if data_dim(wildcards.exp) else "",
    resources:
        mem_mb=resource("small_mem_mb"),
        runtime=resource("small_runtime_min"),
        cpus_per_task=1,
    log:
        R("{exp}/logs/plot_quality.log"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem plot --quality --cube {input.cube} --fit {input.fit} --outdir {params.outdir}"
        " --title {wildcards.exp} {params.dim} > {log} 2>&1"



# Closed-form families: one step, so f_mem (and quality) are read against n, not against training time.
rule plot_closed_form:
    wildcard_constraints:
        exp=CLOSED_FORM_EXPS,
    input:
        cube=R("{exp}/cube.nc"),
        fit=R("{exp}/fit.nc"),
    output:
        R("{exp}/figures/f_mem_vs_n.png"),
    params:
        outdir=R("{exp}/figures"),
        dim=dim_flag,
    resources:
        mem_mb=resource("small_mem_mb"),
        runtime=resource("small_runtime_min"),
        cpus_per_task=1,
    log:
        R("{exp}/logs/plot.log"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem plot --closed-form --cube {input.cube} --fit {input.fit} --outdir {params.outdir}"
        " --title {wildcards.exp} {params.dim} > {log} 2>&1"


rule plot_closed_form_quality:
    wildcard_constraints:
        exp=CLOSED_FORM_EXPS,
    input:
        cube=R("{exp}/cube.nc"),
        fit=R("{exp}/fit.nc"),
    output:
        R("{exp}/figures/quality_vs_n.png"),
    params:
        outdir=R("{exp}/figures"),
        dim=dim_flag,
    resources:
        mem_mb=resource("small_mem_mb"),
        runtime=resource("small_runtime_min"),
        cpus_per_task=1,
    log:
        R("{exp}/logs/plot_quality.log"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem plot --closed-form --quality --cube {input.cube} --fit {input.fit} --outdir {params.outdir}"
        " --title {wildcards.exp} {params.dim} > {log} 2>&1"


# A sweep experiment: its sub-experiments' cubes and fits along a new dimension (width or strength).
# One rule per swept key (the figure's name holds the key), each constrained to its experiments.
for _key in ("width", "strength"):

    rule:
        name:
            f"sweep_{_key}"
        wildcard_constraints:
            exp=exp_regex([name for name, (key, _) in SWEEPS.items() if key == _key]),
        input:
            unpack(sweep_inputs),
        output:
            cube=R("{exp}/cube.nc"),
            fit=R("{exp}/fit.nc"),
            figure=R(f"{{exp}}/figures/sweep_{_key}.png"),
        params:
            sweep=sweep_params,
            model=lambda wildcards: as_arg(family_model(CFG["experiments"][wildcards.exp]["model"])),
            outdir=R("{exp}/figures"),
        resources:
            mem_mb=resource("small_mem_mb"),
            runtime=resource("small_runtime_min"),
            cpus_per_task=1,
        log:
            R(f"{{exp}}/logs/sweep_{_key}.log"),
        conda:
            "../../envs/diffmem.yaml"
        shell:
            "diffmem sweep {params.sweep} --cubes {input.cubes} --fits {input.fits} --model {params.model}"
            " --dataset {input.dataset} --experiment {wildcards.exp} --out-cube {output.cube}"
            " --out-fit {output.fit} --outdir {params.outdir} > {log} 2>&1"
