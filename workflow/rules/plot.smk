# Figures of the sampled families, one job per experiment: `figure_names` (common.smk) lists which
# figures an experiment gets (memorization; quality when quality.enabled, p_delta_pos only with E_TG;
# closed-form families read against n), and one `diffmem plot` call draws them all, reading the cube
# and the fit once. Every figure reads the same cube.nc and fit.nc, so a change to either reran every
# figure anyway; one process instead of one per figure saves the others' start-up (docs/benchmarks.md).
# A job's outputs differ by experiment and Snakemake's outputs cannot be a function of wildcards, so one
# rule per experiment is generated here (plot_<exp>, from plot_jobs), as train_grouped.smk does; {exp}
# stays a wildcard, constrained to that one experiment, so that SMALL_JOB and plot_flags read it.
# Each figure has a caption file of its own (workflow/report/<figure>.rst): a caption template sees
# the job's wildcards, not which of the job's files it describes. A profile cannot name these rules
# (their names depend on the config): it reaches them through default-resources.
for _exp, _rule in plot_jobs():

    rule:
        name:
            _rule
        wildcard_constraints:
            exp=exp_regex([_exp]),
        input:
            cube=R("{exp}/cube.nc"),
            fit=R("{exp}/fit.nc"),
        output:
            figures=[report(R(f"{{exp}}/figures/{figure}.png"), caption=f"../report/{figure}.rst", category="{exp}")
                     for figure in figure_names(_exp)],
        params:
            flags=plot_flags,
            figures=" ".join(figure_names(_exp)),
            outdir=R("{exp}/figures"),
        # the longest of the figure jobs (plot, gallery, copies figure), which end an experiment: first where
        # they wait for a core (the default run's last 15 s on 2 cores)
        priority: 2
        resources:
            **SMALL_JOB,
        log:
            R("{exp}/logs/plot.log"),
        benchmark:
            R("{exp}/benchmarks/plot.tsv"),
        conda:
            "../../envs/diffmem.yaml"
        shell:
            "diffmem plot {params.flags} --figures {params.figures} --cube {input.cube} --fit {input.fit}"
            " --outdir {params.outdir} --title {wildcards.exp} > {log} 2>&1"
