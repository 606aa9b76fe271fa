"""One plot job per experiment (workflow/rules/plot.smk): config.yaml's experiments of every family, planned
by Snakemake in a dry run, get one plot job each for their figures, and it outputs every one of them; the
figure names of workflow/rules/common.smk are those `diffmem plot` draws; a plot rule name that two
experiments would share is a clear error."""

from __future__ import annotations

import ast
import re

import pytest
import yaml
from test_profiles import REPO, dry_run, failed_dry_run, planned_jobs

from diffmem.figures import experiment

MEMORIZATION = list(experiment.MEMORIZATION_FIGURES)
QUALITY = ["timescales", "quality_vs_step", "loss_gap", "tau_gen_levels"]  # quality.enabled, without E_TG
# the default run (digits), a closed form of each kind (linear_d8; kernel_digits, a sweep of five), a width sweep
# without quality, E_TG (gaussian_d8), a twin (pictures_digits), random features and linear_exact (own plot rules)
RUN = ["digits", "gaussian_d8", "linear_d8", "kernel_digits", "widths_digits", "pictures_digits", "rf_gaussian",
       "linear_paper"]
FIGURES = {
    "digits": MEMORIZATION + QUALITY,
    "gaussian_d8": MEMORIZATION + QUALITY[:3] + ["p_delta_pos", "tau_gen_levels"],
    "linear_d8": ["f_mem_vs_n", "quality_vs_n"],
    **{f"kernel_digits/strength{c}": ["f_mem_vs_n", "quality_vs_n"] for c in ("0", "0.03", "0.1", "0.3", "1")},
    **{f"widths_digits/width{w}": MEMORIZATION for w in (16, 32, 64, 128)},
    "pictures_digits": MEMORIZATION + QUALITY,
}


@pytest.mark.snakemake
def test_the_default_config_plans_one_plot_job_per_experiment_with_all_its_figures(tmp_path):
    """Every figure a sampled experiment's targets name (`figure_names`) is an output of its one plot job:
    before, each was a job of its own (ten for digits)."""
    out = dry_run(tmp_path, "--cores", "2", "--configfile", str(REPO / "config.yaml"), "--config", f"run=[{','.join(RUN)}]")
    jobs = planned_jobs(out)
    plots = [job for job in jobs if job["rule"].startswith("plot_")]
    assert sorted(job["wildcards"]["exp"] for job in plots) == sorted(FIGURES)  # one job each, none for rf / linear_exact
    assert {"rf_plot", "linear_exact_plot"} <= {job["rule"] for job in jobs}
    for job in plots:
        exp = job["wildcards"]["exp"]
        assert job["rule"] == "plot_" + re.sub(r"\W", "_", exp)
        assert job["output"].split(", ") == [f"results/{exp}/figures/{name}.png" for name in FIGURES[exp]], exp
    # and every figure of those families that the run asks for is one of theirs
    (targets,) = re.findall(r"rule all:\n\s+input: (.*)", out)
    names = "|".join(MEMORIZATION + QUALITY + ["p_delta_pos", "f_mem_vs_n", "quality_vs_n"])
    asked = {t for t in targets.split(", ") if re.fullmatch(rf"results/.+/figures/({names})\.png", t)}
    assert asked == {path for job in plots for path in job["output"].split(", ")}


def test_the_workflows_figure_names_are_those_the_plot_stage_draws():
    source = (REPO / "workflow/rules/common.smk").read_text()

    def listed(name):
        return ast.literal_eval(re.search(rf"^{name} = (\[.*\])$", source, flags=re.M).group(1))

    assert listed("FIGURES") == list(experiment.MEMORIZATION_FIGURES)
    assert listed("QUALITY_FIGURES") == list(experiment.QUALITY_FIGURES)
    assert listed("CLOSED_FORM_FIGURES") == list(experiment.CLOSED_FORM_FIGURES)


def test_plot_rule_name_collision_is_a_clear_error(tmp_path):
    cfg = yaml.safe_load((REPO / "tests/smoke_config.yaml").read_text())
    exp = cfg["experiments"]["smoke"]
    cfg["experiments"] = {"a-b": exp, "a_b": yaml.safe_load(yaml.safe_dump(exp))}
    cfg["run"] = ["a-b"]
    assert "experiments 'a-b' and 'a_b' both give the plot rule name 'plot_a_b'" in failed_dry_run(tmp_path, cfg)
