# Figures of the sampled families, one job per figure: `figure_names` (common.smk) lists which
# figures an experiment gets (memorization; quality when quality.enabled, p_delta_pos only with E_TG;
# closed-form families read against n), and `plot_flags` tells `diffmem plot` which family to draw.
rule plot:
    wildcard_constraints:
        exp=SAMPLED_EXPS,
        figure="|".join(FIGURES + QUALITY_FIGURES + CLOSED_FORM_FIGURES),
    input:
        cube=R("{exp}/cube.nc"),
        fit=R("{exp}/fit.nc"),
    output:
        report(R("{exp}/figures/{figure}.png"), caption="../report/figure.rst", category="{exp}"),
    params:
        flags=plot_flags,
        outdir=R("{exp}/figures"),
    resources:
        **SMALL_JOB,
    log:
        R("{exp}/logs/plot/{figure}.log"),
    benchmark:
        R("{exp}/benchmarks/plot/{figure}.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem plot {params.flags} --figures {wildcards.figure} --cube {input.cube} --fit {input.fit}"
        " --outdir {params.outdir} --title {wildcards.exp} > {log} 2>&1"
