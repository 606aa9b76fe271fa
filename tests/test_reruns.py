"""What reruns after a finished run: a result key reruns what it changes, a run setting reruns nothing.

Run settings (diffmem.config.RUN_SETTINGS) and every `resources:` key are changed together, each to
another valid value read off the schema, so a key added to either later is covered too; a dry run must
then plan nothing. Also: a failed job's cause reaches the terminal, and `snakemake --report` holds every
figure with its caption, grouped by experiment. Dry runs only against the shared smoke run.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffmem.config import RUN_SETTINGS, load_schema, validate_config
from diffmem.fitfile import read_fit, write_fit

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema()
pytestmark = pytest.mark.snakemake


def snakemake(workdir: Path, config: dict | None, *args: str) -> subprocess.CompletedProcess:
    cfg_path = workdir / "config.yaml"
    if config is not None:
        cfg_path = workdir / "changed.yaml"
        cfg_path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(cfg_path), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def planned(workdir: Path, config: dict | None, *args: str) -> dict[str, int]:
    """rule -> number of jobs a dry run plans (empty when there is nothing to do)."""
    proc = snakemake(workdir, config, "-n", *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    if "Nothing to be done" in out:
        return {}
    table = out[out.index("Job stats:"):]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", table.split("Reasons:")[0], flags=re.M))
    jobs = {rule: int(count) for rule, count in jobs.items() if rule != "total"}
    assert jobs, out[-3000:]
    return jobs


def other_value(prop: dict, current):
    """A valid value of a schema property that differs from `current` (and does not resolve back to it)."""
    if "enum" in prop:
        return next(v for v in prop["enum"] if v != current and v != "auto")
    if "oneOf" in prop:  # auto or a number (train.stack): a number for auto, else another number
        number = next(alt for alt in prop["oneOf"] if "type" in alt)
        return other_value(number, (number.get("minimum", 1) if current == "auto" else current))
    types = prop.get("type", [])
    types = types if isinstance(types, list) else [types]
    if isinstance(current, bool):
        return not current
    if current is None:
        return 2 if "integer" in types else 3.0 if "number" in types else "cpu"
    if isinstance(current, int):
        return current + 1
    if isinstance(current, float):
        return current * 2
    if "pattern" in prop:  # a device
        return "cpu" if current != "cpu" else "auto"
    raise AssertionError(f"no other value for {prop}")


def with_every_run_setting_changed(raw: dict) -> tuple[dict, list[str]]:
    resolved = validate_config(raw)
    cfg, changed = copy.deepcopy(raw), []
    for name, exp in cfg["experiments"].items():
        sections = {**{s: RUN_SETTINGS[s] for s in RUN_SETTINGS}, "resources": tuple(SCHEMA["$defs"]["resources"]["properties"])}
        for section, keys in sections.items():
            for key in keys:
                prop = SCHEMA["$defs"][section]["properties"][key]
                value = other_value(prop, resolved["experiments"][name][section][key])
                exp.setdefault(section, {})[key] = value
                changed.append(f"{section}.{key}={value!r}")
    return cfg, changed


@pytest.fixture(scope="module")
def smoke(smoke_run):
    return smoke_run, yaml.safe_load((smoke_run / "config.yaml").read_text())


def test_a_finished_run_plans_nothing(smoke):
    workdir, _ = smoke
    assert planned(workdir, None) == {}


def test_every_run_setting_and_resource_changed_at_once_reruns_nothing(smoke):
    workdir, raw = smoke
    cfg, changed = with_every_run_setting_changed(raw)
    assert any(c.startswith("train.grouped=True") for c in changed)  # training is regrouped, too
    assert len(changed) >= 20, changed
    jobs = planned(workdir, cfg)
    assert jobs == {}, f"changing {changed} planned {jobs}"


def test_the_slurm_profiles_gpu_default_reruns_nothing(smoke):
    """`--config gpus_per_train_job=1` (what workflow/profiles/slurm sets) regroups training on GPUs."""
    workdir, _ = smoke
    assert planned(workdir, None, "--config", "gpus_per_train_job=1") == {}


@pytest.mark.skipif(importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
                    reason="snakemake-executor-plugin-slurm not installed")
def test_moving_a_finished_local_run_to_the_slurm_profile_reruns_nothing(smoke):
    workdir, _ = smoke
    assert planned(workdir, None, "--profile", str(REPO / "workflow/profiles/slurm")) == {}


@pytest.mark.parametrize("section, key, value, reruns", [
    # gallery and copies_figure read the scores (and fit): every result key upstream of scoring reruns them
    # plot_smoke: the experiment's one plot job (workflow/rules/plot.smk generates a rule per experiment)
    ("score", "ratio_threshold", 0.5, {"score", "cube", "fit", "plot_smoke", "gallery", "copies_figure"}),
    ("train", "precision", "bf16", {"train", "sample", "score", "quality", "cube", "fit", "plot_smoke", "gallery",
                                    "copies_figure"}),
    ("sample", "num_steps", 7, {"sample", "score", "quality", "cube", "fit", "plot_smoke", "gallery", "copies_figure"}),
    # the sampling kernel changes the samples by float rounding: a result key, not a run setting
    ("sample", "kernel", "torch", {"sample", "score", "quality", "cube", "fit", "plot_smoke", "gallery", "copies_figure"}),
])
def test_a_result_key_reruns_its_stage_and_downstream(smoke, section, key, value, reruns):
    workdir, raw = smoke
    cfg = copy.deepcopy(raw)
    cfg["experiments"]["smoke"][section][key] = value
    jobs = planned(workdir, cfg)
    assert set(jobs) - {"all"} == reruns, jobs


def test_removing_a_seed_rebuilds_the_cube(smoke):
    """The input trigger is off (profiles/default); the runs a cube combines are its param instead."""
    workdir, raw = smoke
    cfg = copy.deepcopy(raw)
    cfg["experiments"]["smoke"]["data"]["seeds"] = [0]
    jobs = planned(workdir, cfg)
    assert {"cube", "fit", "plot_smoke"} <= set(jobs) and not {"train", "sample", "score"} & set(jobs), jobs


def test_a_failed_jobs_cause_reaches_the_terminal(smoke, tmp_path):
    """A plot job that cannot draw a figure it must (here: in a copy of the smoke run, a fit.nc stripped of its
    tau_gen metric) fails with its one-line cause printed (show-failed-logs in profiles/default), and leaves
    no figure of its own behind."""
    source, _ = smoke
    workdir = tmp_path / "wf"
    shutil.copytree(source, workdir, symlinks=True)  # timestamps and Snakemake's records kept
    exp = workdir / "results_smoke/smoke"
    fit = read_fit(exp / "fit.nc")
    del fit.attrs["tau_gen_metric"]
    write_fit(fit, exp / "fit.nc")  # newer than the figures: their plot job runs again
    proc = snakemake(workdir, None, "results_smoke/smoke/figures/quality_vs_step.png")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "diffmem: error: plot: cannot draw quality_vs_step.png: the fit has no tau_gen metric" in out, out[-3000:]
    assert not (exp / "figures/quality_vs_step.png").exists() and not (exp / "figures/overview.png").exists()


def test_report_holds_every_figure_with_its_caption(smoke):
    workdir, _ = smoke
    report = workdir / "report.html"
    proc = snakemake(workdir, None, "--report", str(report))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    html = report.read_text()
    root = workdir / "results_smoke/smoke/figures"
    figures = sorted(f"results_smoke/smoke/figures/{p.relative_to(root)}" for p in root.rglob("*.png"))
    # the memorization, scaling and quality figures (no p_delta_pos; tau_gen_levels), copies.png, and one gallery
    # per run
    assert len([f for f in figures if "/gallery/" not in f]) == 11, figures
    assert len([f for f in figures if "/gallery/" in f]) == 4, figures
    categories = json.loads(re.search(r"var categories = (\{.*?\});", html).group(1))
    assert sorted(p for paths in categories["smoke"].values() for p in paths) == figures
    for path in figures:
        name = path.rsplit("/", 1)[1]
        record = re.search(rf'"{re.escape(path)}": \{{"name": "{re.escape(name)}".*?"data_uri": "([^"]{{0,80}})', html)
        assert record, f"{name} is not in the report"
        assert record.group(1).startswith(f"data:image/png;charset=utf8;filename={name};base64,iVBORw0KGgo"), name
        caption = re.search(rf'"{re.escape(path)}": \{{.*?"caption": "<p>(.*?)</p>', html).group(1)
        assert len(caption) > 80, (name, caption)  # the figure's own caption, rendered
