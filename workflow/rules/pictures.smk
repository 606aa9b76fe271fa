# Pictures of a run (issue 14): copy galleries, memorization per training example, the twin-model test.
# Their helpers (picture_targets, twin_subset_seed, twin_run, train_runs_arg) are at the end of common.smk.


PICTURED_EXPS = names_where(pictured)
TWINNED_EXPS = names_where(has_twin)
TWIN_EXPS = names_where(is_twin)


# A twin run's training set: the last n points of its parent seed's pool permutation (disjoint from the
# run's first n). Everything else about a twin run is done by the ordinary rules.
ruleorder: subsample_twin > subsample


rule subsample_twin:
    wildcard_constraints:
        exp=TWIN_EXPS,
    input:
        R("{exp}/data/dataset.npz"),
    output:
        RUN("train.npz"),
    params:
        seed=twin_subset_seed,
    resources:
        **SMALL_JOB,
    log:
        R("{exp}/logs/subsample/n{n}_seed{seed}.log"),
    benchmark:
        R("{exp}/benchmarks/subsample/n{n}_seed{seed}.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem subsample --dataset {input} --n {wildcards.n} --seed {params.seed} --twin --out {output} > {log} 2>&1"


# One job draws the galleries of every run of an experiment (the imports cost more than a figure).
rule gallery:
    wildcard_constraints:
        exp=PICTURED_EXPS,
    input:
        samples=lambda wildcards: runs(wildcards.exp, RUN("samples.json")),
        scores=lambda wildcards: runs(wildcards.exp, RUN("scores.nc")),
        train=lambda wildcards: runs(wildcards.exp, RUN("train.npz")),
        fit=R("{exp}/fit.nc"),
    output:
        report(
            directory(R("{exp}/figures/gallery")),
            patterns=["n{n}_seed{seed}.png"],
            caption="../report/gallery.rst",
            category="{exp}",
            subcategory="copies",
        ),
    params:
        outs=lambda wildcards: runs(wildcards.exp, R("{exp}/figures/gallery/n{n}_seed{seed}.png")),
    priority: 1  # after the plot job, before the copies figure (plot.smk)
    resources:
        **SMALL_JOB,
    log:
        R("{exp}/logs/gallery.log"),
    benchmark:
        R("{exp}/benchmarks/gallery.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem gallery --samples {input.samples} --scores {input.scores} --train {input.train}"
        " --fit {input.fit} --title {wildcards.exp} --out {params.outs} > {log} 2>&1"


rule copies_figure:
    wildcard_constraints:
        exp=PICTURED_EXPS,
    input:
        cube=R("{exp}/cube.nc"),
        train=lambda wildcards: runs(wildcards.exp, RUN("train.npz")),
    output:
        report(R("{exp}/figures/copies.png"), caption="../report/copies.rst", category="{exp}", subcategory="copies"),
    params:
        runs=train_runs_arg,
    resources:
        **SMALL_JOB,
    log:
        R("{exp}/logs/copies_figure.log"),
    benchmark:
        R("{exp}/benchmarks/copies_figure.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem copies-figure --cube {input.cube} --runs {params.runs} --title {wildcards.exp}"
        " --out {output} > {log} 2>&1"


# The twin of run (n, seed) is run (n, seed + TWIN_SEED_OFFSET) of experiment <exp>/twin, built by the
# ordinary subsample, train and sample rules.
rule twin_compare:
    wildcard_constraints:
        exp=TWINNED_EXPS,
    input:
        samples=RUN("samples.json"),
        train=RUN("train.npz"),
        twin_samples=twin_run("samples.json"),
        twin_train=twin_run("train.npz"),
    output:
        RUN("twin.nc"),
    threads: job_cpus
    resources:
        mem_mb=resource("score_mem_mb"),
        runtime=resource("score_runtime_min"),
        cpus_per_task=job_cpus,
    log:
        R("{exp}/logs/twin/n{n}_seed{seed}.log"),
    benchmark:
        R("{exp}/benchmarks/twin/n{n}_seed{seed}.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem twin --samples {input.samples} --twin-samples {input.twin_samples} --train {input.train}"
        " --twin-train {input.twin_train} --out {output} > {log} 2>&1"


rule twin_figure:
    wildcard_constraints:
        exp=TWINNED_EXPS,
    input:
        R("{exp}/cube.nc"),
    output:
        report(R("{exp}/figures/twin.png"), caption="../report/twin.rst", category="{exp}", subcategory="twin models"),
    resources:
        **SMALL_JOB,
    log:
        R("{exp}/logs/twin_figure.log"),
    benchmark:
        R("{exp}/benchmarks/twin_figure.tsv"),
    conda:
        "../../envs/diffmem.yaml"
    shell:
        "diffmem twin-figure --cube {input} --title {wildcards.exp} --out {output} > {log} 2>&1"
