# diffmem: subsample -> train (checkpoints by step) -> sample -> score -> cube -> fit -> figures.
# Run `snakemake --cores all` (default config.yaml) or `snakemake --cores all --configfile my.yaml`.
from snakemake.utils import min_version

min_version("9.0")  # the update() output flag of the training rules


# The embedded default; `--configfile other.yaml` replaces it instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# The config is validated against workflow/schemas/config.schema.yaml (the package's schema) by
# diffmem.config in common.smk, which names the bad key in one line; Snakemake's own validate() would
# print the whole schema first.


# `snakemake --report report.html`: every figure, captioned, one category per experiment.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/train_grouped.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/quality.smk"
include: "workflow/rules/evaluate_grouped.smk"
include: "workflow/rules/cube.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/plot.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/rf.smk"
include: "workflow/rules/pictures.smk"
include: "workflow/rules/linear_exact.smk"
include: "workflow/rules/horizons.smk"


rule all:
    input:
        all_targets(),
    default_target: True
