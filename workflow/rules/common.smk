# Config resolution, target lists and per-rule config slices. Rules only read from here.
import functools
import json
import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

from snakemake.settings.types import DeploymentMethod

from diffmem.config import (
    CLOSED_FORM,
    SWEEP_KEYS,
    TWIN_SEED_OFFSET,
    ConfigError,
    expand_sweeps,
    experiment_name_pattern,
    family_model,
    is_twin,
    size_experiment,
    sweep_leaf_name,
    split_run_settings,
    sweep_of,
    training_groups,
    twin_experiments,
    validate_config,
    without_quiet_defaults,
)
from diffmem.fingerprint import data_fingerprint, fingerprint

try:
    CFG = validate_config(config)
except ConfigError as exc:  # one line naming the key, before any job runs (no traceback: nothing is wrong here)
    print(f"diffmem: {exc}", file=sys.stderr)
    sys.exit(1)

# How a job calls diffmem: `diffmem ...` in a rule's command is a shell function defined in the
# prefix of every job's shell (below), which runs the interpreter that runs Snakemake (`python -m
# snakemake`, a virtual environment's bin/snakemake, activated or not), so jobs never depend on PATH.
# With `--sdm conda` a job runs in envs/diffmem.yaml, which holds the dependencies but not diffmem
# itself (Snakemake copies the env file elsewhere, so it cannot install this checkout): the env's
# python imports diffmem from this checkout's src/ instead. The prefix keeps Snakemake's own
# `set -euo pipefail`; its braces are doubled because Snakemake formats it.
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    DIFFMEM = f"PYTHONPATH={shlex.quote(str(Path(workflow.basedir) / 'src'))}${{{{PYTHONPATH:+:$PYTHONPATH}}}} python -m diffmem"
else:
    DIFFMEM = f"{shlex.quote(sys.executable)} -m diffmem"
shell.prefix(f'set -euo pipefail; diffmem() {{{{ {DIFFMEM} "$@"; }}}}; ')

RESULTS = CFG["results_dir"]
# The experiments the per-run stages see: a sweep (a list in one key of config.SWEEP_KEYS: model.width,
# model.strength or train.tikhonov) becomes one sub-experiment per value, "<name>/width32", run under
# results/<name>/width32/; the sweep rule of its key then combines their cubes into results/<name>/cube.nc.
SWEEPS = {name: sweep_of(exp) for name, exp in CFG["experiments"].items() if sweep_of(exp) is not None}
# Each leaf's unset `resources:` are sized from its grid (src/diffmem/resources.py).
EXPERIMENTS = {name: size_experiment(exp) for name, exp in expand_sweeps(CFG["experiments"]).items()}
# data.twin: each such (leaf) experiment gets a twin experiment "<name>/twin" (results/<name>/twin/), run by
# the normal subsample / train / sample rules on disjoint training sets (src/diffmem/stages/twin.py, pictures.smk)
EXPERIMENTS.update(twin_experiments(EXPERIMENTS))


def R(template):
    """A path under the results folder: R("{exp}/cube.nc") -> "<results_dir>/{exp}/cube.nc"."""
    return f"{RESULTS}/{template}"


def RUN(name):
    """A file of one (n, seed) run: RUN("train.npz") -> "<results_dir>/{exp}/runs/n{n}_seed{seed}/train.npz"."""
    return R(f"{{exp}}/runs/n{{n}}_seed{{seed}}/{name}")


# Figure names (without .png) of each family; `figure_names` picks an experiment's.
FIGURES = ["overview", "f_mem_vs_step", "f_mem_vs_step_over_n", "tau_mem_vs_n", "losses", "scaling"]
QUALITY_FIGURES = ["timescales", "quality_vs_step", "loss_gap", "p_delta_pos", "tau_gen_levels"]
CLOSED_FORM_FIGURES = ["f_mem_vs_n", "quality_vs_n"]
RF_FIGURES = ["rf_losses", "rf_split_time"]
LINEAR_EXACT_FIGURES = ["p_delta_vs_psi_n", "n_half_vs_d", "e_tg_e_og", "kl_generated"]


wildcard_constraints:
    exp=experiment_name_pattern(),  # configured names, sweep leaves of every config.SWEEP_KEYS key, twins
    n=r"\d+",
    seed=r"\d+",


def exp_cfg(wildcards):
    try:
        return EXPERIMENTS[wildcards.exp]
    except KeyError:
        raise WorkflowError(f"experiment '{wildcards.exp}' is not defined in the config") from None


def as_arg(obj):
    """A config slice as one shell-quoted JSON word."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


def data_keys(wildcards):
    # n_train and seeds select branches; they must not invalidate the shared dataset file
    data = exp_cfg(wildcards)["data"]
    return without_quiet_defaults("data", {k: v for k, v in data.items() if k not in ("n_train", "seeds", "twin")})


def data_slice(wildcards):
    return as_arg(data_keys(wildcards))


# --- User files tracked by content (src/diffmem/fingerprint.py, docs/reruns.md) -----------------------
# The profile's rerun triggers trust timestamps, and a file copied with `cp -p` or restored from an archive
# can change content under an old mtime. So a rule that reads the user's files tracks a param holding its
# config slice and the sha256 of those files; the command gets the same slice without it from an untracked
# (derived) param. A slice that names no file is tracked as before, so finished runs rerun nothing.
# Each fingerprint is computed once per Snakemake invocation, when a job of the run first needs it; per-file
# hashes are cached under <results_dir>/.fingerprints/ by size, mtime, ctime and inode.
FINGERPRINT_CACHE = R(".fingerprints")


def once_per_run(compute):
    """compute(key), cached for this invocation; a file unreadable since the config checks (a dangling
    link, a file removed meanwhile) stops Snakemake with diffmem's one line, like a config error."""

    @functools.cache
    def cached(key):
        try:
            return compute(key)
        except ConfigError as exc:
            print(f"diffmem: {exc}", file=sys.stderr)
            sys.exit(1)

    return cached


@once_per_run
def data_sha256(data_json):
    return data_fingerprint(json.loads(data_json), cache_dir=FINGERPRINT_CACHE)


@once_per_run
def file_sha256(path):
    return fingerprint(path, cache_dir=FINGERPRINT_CACHE)


def with_content(keys, fingerprints):
    """A tracked param: the config slice `keys` with the fingerprints of the files it names, if any."""
    named = {key: fp for key, fp in fingerprints.items() if fp is not None}
    return as_arg({**keys, "content_sha256": named} if named else keys)


def data_content(wildcards):
    """prepare_data's tracked param: the data slice and the sha256 of the files data.path names."""
    keys = data_keys(wildcards)
    return with_content(keys, {"data.path": data_sha256(json.dumps(keys, sort_keys=True))})


def quality_content(wildcards):
    """The quality rule's tracked param: its quality slice and the sha256 of quality.inception_weights
    where the inception space reads it."""
    keys = result_slice(wildcards.exp, "quality")
    weights = keys["inception_weights"] if "inception" in keys["feature_spaces"] else None
    return with_content(keys, {"quality.inception_weights": file_sha256(weights) if weights else None})


def untracked(param, exp=None):
    """The same param for the command line, evaluated when the job runs and not recorded for the params
    trigger (a function of `output` is a derived param), as its *_content twin tracks it; `exp` names the
    experiment of a rule without an {exp} wildcard (the grouped rules)."""
    return lambda wildcards, output: param(SimpleNamespace(exp=exp) if exp else wildcards)


def result_slice(exp, name):
    """An experiment's config section without its run settings (diffmem.config.RUN_SETTINGS)."""
    return split_run_settings(name, EXPERIMENTS[exp][name])[0]


def section(name):
    """A rule's param: the keys of one config section that can change its output (as a JSON word)."""

    def param(wildcards):
        exp_cfg(wildcards)  # one clear line for an experiment that is not in the config
        return as_arg(result_slice(wildcards.exp, name))

    return param


# Run settings (diffmem.config.RUN_SETTINGS: threads, devices, logging, evaluation batch sizes, ...)
# change how a job runs, not what it writes, so changing them must rerun nothing (docs/reruns.md).
# They reach the job as `--run-settings '<json>'` from a param function that takes `output`:
# Snakemake evaluates such "derived" params when the job runs and records only the others for its
# params rerun trigger (tests/test_reruns.py holds it to that).
def run_settings(name, exp=None):
    """A rule's param: the run settings of one config section (as a JSON word), not a rerun trigger;
    `exp` names the experiment of a rule without an {exp} wildcard (the grouped training rules)."""

    def param(wildcards, output):
        return as_arg(split_run_settings(name, EXPERIMENTS[exp or wildcards.exp][name])[1])

    return param


def sample_device(exp=None):
    """The sampling rules' param: sampling runs where training ran (train.device), a run setting like
    run_settings'; `exp` as there."""

    def param(wildcards, output):
        return shlex.quote(EXPERIMENTS[exp or wildcards.exp]["train"]["device"])

    return param


def model_slice(wildcards):
    # without the other families' keys: e.g. a network's training does not rerun when `strength` changes
    return as_arg(family_model(exp_cfg(wildcards)["model"]))


def rf_model_slice(wildcards):
    # model.rf_ridge 0 (no ridge) leaves the slice as it was before the key existed: those runs do not rerun
    model = family_model(exp_cfg(wildcards)["model"])
    return as_arg({k: v for k, v in model.items() if not (k == "rf_ridge" and v == 0)})


def rf_compared(wildcards):
    """This experiment and those its fit.rf_compare names (each must be a random-features experiment)."""
    others = list(EXPERIMENTS[wildcards.exp]["fit"]["rf_compare"])
    for other in others:
        if other not in EXPERIMENTS or not is_rf(other):
            raise WorkflowError(f"config error at 'experiments.{wildcards.exp}.fit.rf_compare': '{other}' is not a "
                                "random_features experiment")
    return [wildcards.exp, *others]


def family(exp):
    return EXPERIMENTS[exp]["model"]["family"]


def names_where(test):
    """Wildcard regex of the (leaf) experiments passing test(name); rules are constrained with these so
    each family's files have exactly one producing rule."""
    return exp_regex([name for name in EXPERIMENTS if test(name)])


def is_trained(exp):
    return family(exp) == "network"


def is_closed_form(exp):
    return family(exp) in CLOSED_FORM


def is_rf(exp):
    return family(exp) == "random_features"


def is_linear_exact(exp):
    return family(exp) == "linear_exact"


def keeps_checkpoints(exp):
    """Whether a run's checkpoints stay after sampling (train.keep all or weights) or are a temp() output."""
    return EXPERIMENTS[exp]["train"]["keep"] != "sampling"


def linear_exact_parts(wildcards):
    """The per-dimension results a linear_exact experiment stacks (model.linear_dims)."""
    return [R(f"{wildcards.exp}/dims/d{d}.nc") for d in EXPERIMENTS[wildcards.exp]["model"]["linear_dims"]]


def runs(exp, pattern):
    data = EXPERIMENTS[exp]["data"]
    return [pattern.format(exp=exp, n=n, seed=s) for n in data["n_train"] for s in data["seeds"]]


def figure_names(exp):
    """The figures of one leaf experiment; only those its cube and fit can fill (no placeholders)."""
    if is_linear_exact(exp):
        return LINEAR_EXACT_FIGURES
    if is_rf(exp):  # rf_compare.png where fit.rf_compare names experiments to draw with this one
        return RF_FIGURES + (["rf_compare"] if EXPERIMENTS[exp]["fit"]["rf_compare"] else [])
    if is_closed_form(exp):
        return ["f_mem_vs_n"] + (["quality_vs_n"] if quality_enabled(exp) else [])
    if not quality_enabled(exp):
        return FIGURES
    quality = EXPERIMENTS[exp]["quality"]
    skip = {"quality_vs_step", "tau_gen_levels"} if EXPERIMENTS[exp]["fit"]["tau_gen_metric"] is None else set()
    skip |= set() if quality["e_tg"] else {"p_delta_pos"}  # P(Delta > 0) needs E_TG
    return FIGURES + [name for name in QUALITY_FIGURES if name not in skip]


def experiment_targets(exp):
    """Every file `snakemake` builds for one configured experiment (a sweep: its leaves and the sweep)."""
    if exp in SWEEPS:
        key, values = SWEEPS[exp]
        out = [R(f"{exp}/cube.nc"), R(f"{exp}/fit.nc"), R(f"{exp}/figures/sweep_{key}.png")]
        return out + [t for v in values for t in experiment_targets(sweep_leaf_name(exp, key, v))]
    out = [R(f"{exp}/cube.nc"), R(f"{exp}/fit.nc")]
    return out + [R(f"{exp}/figures/{name}.png") for name in figure_names(exp)] + picture_targets(exp) + horizon_targets(exp)


def horizon_targets(exp):
    """horizons.nc and its figure (workflow/rules/horizons.smk) for a sampled experiment that sets fit.horizons."""
    if is_rf(exp) or is_linear_exact(exp) or is_closed_form(exp) or not EXPERIMENTS[exp]["fit"]["horizons"]:
        return []
    return [R(f"{exp}/horizons.nc"), R(f"{exp}/figures/horizons.png")]


def all_targets():
    return [t for exp in CFG["run"] for t in experiment_targets(exp)]


def resources_of(exp):
    """The resources section of a leaf experiment, or of a sweep's first leaf for the sweep itself."""
    if exp in SWEEPS:
        key, values = SWEEPS[exp]
        exp = sweep_leaf_name(exp, key, values[0])
    try:
        return EXPERIMENTS[exp]["resources"]
    except KeyError:
        raise WorkflowError(f"experiment '{exp}' is not defined in the config") from None


def resource(key):
    """A rule's request for `key` of its experiment's `resources:` (given, or sized from the grid)."""
    return lambda wildcards: resources_of(wildcards.exp)[key]


# The request of every short single-core job (data preparation, cube, fit, figures, sweeps).
SMALL_JOB = dict(mem_mb=resource("small_mem_mb"), runtime=resource("small_runtime_min"), cpus_per_task=1)


def train_threads(wildcards):
    return exp_cfg(wildcards)["train"]["threads"]


def job_cpus(wildcards):
    """cpus_per_task (and threads: Snakemake exports OMP_NUM_THREADS) of sampling, scoring and quality."""
    return resources_of(wildcards.exp)["cpus_per_job"]


def data_dim(exp):
    """d of synthetic data (for P(Delta > 0) against n/d); None for image data."""
    data = EXPERIMENTS[exp]["data"]
    return data["dim"] if data["dataset"] in ("gmm", "gaussian") else None


def plot_flags(wildcards):
    """What `diffmem plot` needs besides the figure names: the closed-form family's figures, and d for the
    n/d axes of synthetic data."""
    flags = ["--closed-form"] if is_closed_form(wildcards.exp) else []
    if data_dim(wildcards.exp):
        flags.append(f"--data-dim {data_dim(wildcards.exp)}")
    return " ".join(flags)


def plot_jobs():
    """(experiment, name of its plot rule) of every sampled experiment (SAMPLED_EXPS, i.e. not random_features
    and not linear_exact): one job draws all of its figures (plot.smk)."""
    jobs = [(exp, generated_rule_name("plot_", exp)) for exp in EXPERIMENTS if not is_rf(exp) and not is_linear_exact(exp)]
    unique_rule_names(jobs, "plot")
    return jobs


def quality_enabled(exp):
    return EXPERIMENTS[exp]["quality"]["enabled"]


CLASSIFIER_KEYS = ("classifier_epochs", "classifier_lr", "seed")


def classifier_slice(wildcards):
    quality = exp_cfg(wildcards)["quality"]
    return as_arg({k: quality[k] for k in CLASSIFIER_KEYS})


def run_files(runs, name):
    """The file `name` of each run folder (`<exp>/runs/n<n>_seed<s>`) of a grouped job."""
    return [R(f"{run}/{name}") for run in runs]


def snakemake_mtime(path):
    """A file's modification time as Snakemake's mtime trigger reads it (a directory: its .snakemake_timestamp
    where it has one)."""
    stamp = Path(path) / ".snakemake_timestamp"
    return (stamp if stamp.is_file() else Path(path)).stat().st_mtime


def own_mtime(paths, outputs):
    """A grouped job's input files, one per member, each marked ancient() where it is not newer than that
    member's own outputs (`outputs`: one path or list per member). Snakemake compares every input of a job
    with its oldest output, so a group would rerun after its members were made apart (by the per-run rules,
    or in another grouping) just because one member finished after another; this makes the mtime trigger
    compare each member's inputs with its own outputs, as the per-run rules do. A member whose input is newer
    than its outputs still reruns the group. Read when the workflow is parsed, before anything runs."""
    marked = []
    for path, own in zip(paths, outputs):
        own = [own] if isinstance(own, str) else own
        try:
            fresh = snakemake_mtime(path) <= min(snakemake_mtime(out) for out in own)
        except FileNotFoundError:  # a missing output runs the job anyway; a missing input is made first
            fresh = False
        marked.append(ancient(path) if fresh else path)
    return marked


def grouped_quality_inputs(exp, runs):
    """quality_inputs of a grouped evaluation job: a list over the group's `runs` folders for each per-run input."""
    out, run_level = {}, "{exp}/runs/n{n}_seed{seed}"
    outputs = run_files(runs, "quality.nc")
    for key, path in quality_inputs(SimpleNamespace(exp=exp)).items():  # templates: Snakemake fills the wildcards
        if run_level in path:
            out[key] = own_mtime([path.replace(run_level, run) for run in runs], outputs)
        else:
            out[key] = path.replace("{exp}", exp)
    return out


def quality_inputs(wildcards):
    inputs = {
        "samples": RUN("samples.json"),
        "train": RUN("train.npz"),
        "dataset": R("{exp}/data/dataset.npz"),
    }
    if is_trained(wildcards.exp):
        inputs["metrics"] = RUN("train_metrics.nc")
    if quality_needs_networks(wildcards.exp):
        inputs["checkpoints"] = RUN("checkpoints")
    if "classifier" in exp_cfg(wildcards)["quality"]["feature_spaces"]:
        inputs["classifier"] = R("{exp}/classifier/classifier.pt")
    return inputs


def run_grid(wildcards):
    """The (n, seed) runs a cube combines, as a param: removing an n or a seed must rebuild the cube even
    where Snakemake's input trigger is off (profiles/default)."""
    data = exp_cfg(wildcards)["data"]
    return {"n": data["n_train"], "seeds": data["seeds"], "quality": quality_enabled(wildcards.exp)}


def cube_inputs(wildcards):
    inputs = {"scores": runs(wildcards.exp, RUN("scores.nc"))}
    if is_trained(wildcards.exp):
        inputs["metrics"] = runs(wildcards.exp, RUN("train_metrics.nc"))
    if quality_enabled(wildcards.exp):
        inputs["quality"] = runs(wildcards.exp, RUN("quality.nc"))
    if has_twin(wildcards.exp):
        inputs["twin"] = runs(wildcards.exp, RUN("twin.nc"))
    return inputs


# --- Which rule produces an experiment's files ------------------------------------------------------
# An experiment with `train.grouped` on trains a group of (n, seed) runs in one job (rules generated per
# experiment and group in train_grouped.smk). The per-(n, seed) `train` job must not claim those files,
# so train.smk constrains it with exp=UNGROUPED_KEPT_EXPS or UNGROUPED_TRANSIENT_EXPS.
def grouped_experiments():
    return [name for name, exp in EXPERIMENTS.items() if exp["train"]["grouped"] and is_trained(name)]


def exp_regex(names):
    """A wildcard regex matching exactly these experiment names; matches nothing if there are none."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


def evaluation_grouped_experiments():
    """Trained experiments whose sample, score and quality jobs follow the training groups (train.group_evaluation)."""
    return [name for name, exp in EXPERIMENTS.items() if exp["train"]["group_evaluation"] and is_trained(name)]


# the per-run sample, score and quality rules serve every other experiment (evaluate_grouped.smk the others)
PER_RUN_EVALUATION_EXPS = names_where(lambda name: name not in evaluation_grouped_experiments())
PER_RUN_SAMPLED_TRAINED_EXPS = names_where(lambda name: is_trained(name) and name not in evaluation_grouped_experiments())

# the per-run training rule comes in two, one per kind of checkpoint output (checkpoint_folder)
UNGROUPED_KEPT_EXPS = names_where(lambda name: is_trained(name) and name not in grouped_experiments() and keeps_checkpoints(name))
UNGROUPED_TRANSIENT_EXPS = names_where(
    lambda name: is_trained(name) and name not in grouped_experiments() and not keeps_checkpoints(name))
TRAINED_EXPS = names_where(is_trained)
CLOSED_FORM_EXPS = names_where(is_closed_form)
SAMPLED_EXPS = names_where(lambda name: not is_rf(name) and not is_linear_exact(name))
RF_EXPS = names_where(is_rf)
LINEAR_EXACT_EXPS = names_where(is_linear_exact)


def sweep_inputs(wildcards):
    key, values = SWEEPS[wildcards.exp]
    leaves = [sweep_leaf_name(wildcards.exp, key, v) for v in values]
    return {
        "cubes": [R(f"{leaf}/cube.nc") for leaf in leaves],
        "fits": [R(f"{leaf}/fit.nc") for leaf in leaves],
        "dataset": R(f"{leaves[0]}/data/dataset.npz"),
    }


def sweep_params(wildcards):
    key, values = SWEEPS[wildcards.exp]
    return f"--key {key} --values {' '.join(f'{v:g}' for v in values)}"


def grouped_train_jobs():
    """(experiment, label, [(n, seed), ...]) of every grouped training job (train.group_by, max_group)."""
    jobs = [(exp, label, members) for exp in grouped_experiments() for label, members in training_groups(EXPERIMENTS[exp])]
    unique_rule_names([(exp, grouped_rule_name(exp, label)) for exp, label, _ in jobs], "grouped training")
    return jobs


def grouped_evaluation_jobs():
    """(experiment, label, [(n, seed), ...]) of every grouped evaluation job: one per training group
    (train.group_by, max_group) of each experiment with train.group_evaluation, per stage."""
    jobs = [(exp, label, members) for exp in evaluation_grouped_experiments()
            for label, members in training_groups(EXPERIMENTS[exp])]
    unique_rule_names([(exp, generated_rule_name("sample_grouped_", exp, f"_{label}")) for exp, label, _ in jobs],
                      "grouped evaluation")
    return jobs


def grouped_rule_name(exp, label):
    return generated_rule_name("train_grouped_", exp, f"_{label}")


def generated_rule_name(prefix, exp, suffix=""):
    """The generated rule's name for experiment `exp`, between `prefix` and `suffix`. Rule names are identifiers,
    so every character of the experiment's name that is not a word character (a dash, a dot, a slash) becomes an
    underscore."""
    safe = re.sub(r"\W", "_", exp)
    return f"{prefix}{safe}{suffix}"


def unique_rule_names(named, kind):
    """One clear config error where two experiments of `named` ((experiment, rule name), ...) give one name."""
    seen = {}
    for exp, name in named:
        if seen.setdefault(name, exp) != exp:
            raise WorkflowError(f"config error: experiments '{seen[name]}' and '{exp}' both give the {kind} rule name "
                                f"'{name}' (in rule names, '_' stands for any other non-word character); rename one of them")


# --- Pictures and twin models (workflow/rules/pictures.smk, src/diffmem/stages/twin.py) ------------------
def has_twin(exp):
    return bool(EXPERIMENTS[exp]["data"].get("twin")) and not is_twin(exp)


def pictured(exp):
    """Experiments with samples and scores (every family but random_features and linear_exact), twins
    excluded."""
    return not is_rf(exp) and not is_linear_exact(exp) and not is_twin(exp)


def picture_targets(exp):
    if not pictured(exp):
        return []
    out = [R(f"{exp}/figures/gallery"), R(f"{exp}/figures/copies.png")]  # gallery/: n<n>_seed<s>.png per run
    return out + ([R(f"{exp}/figures/twin.png")] if has_twin(exp) else [])


def twin_subset_seed(wildcards):
    """The seed whose pool permutation a twin run's set comes from (its own seed less TWIN_SEED_OFFSET)."""
    return int(wildcards.seed) - TWIN_SEED_OFFSET


def twin_run(name):
    """A file of the twin of run (n, seed): results/<exp>/twin/runs/n{n}_seed{seed + TWIN_SEED_OFFSET}/name."""
    return lambda wildcards: R(f"{wildcards.exp}/twin/runs/n{wildcards.n}_seed{int(wildcards.seed) + TWIN_SEED_OFFSET}/{name}")


def train_runs_arg(wildcards, input):
    """N:SEED:train.npz of every run, for copies-figure."""
    pairs = [(n, s) for n in exp_cfg(wildcards)["data"]["n_train"] for s in exp_cfg(wildcards)["data"]["seeds"]]
    return " ".join(f"{n}:{s}:{path}" for (n, s), path in zip(pairs, input.train))


# Training (train.smk, train_grouped.smk): one command for the per-run and the grouped rules.
TRAIN_SHELL = (
    "diffmem train --train {input.train} --dataset {input.dataset} --model {params.model}"
    " --train-cfg {params.train} --run-settings {params.run} --seed {params.seeds}"
    " --checkpoints {output.checkpoints} --out {output.metrics} > {log} 2>&1"
)


def checkpoint_folder(path, kept):
    """A training job's checkpoint folder as an output. Kept: update(), so Snakemake does not delete it
    before the job runs again (a raised max_steps continues from it; on failure Snakemake restores it).
    Not kept (train.keep: sampling): temp(), deleted once every job that reads it has run."""
    return update(directory(path)) if kept else temp(directory(path))


def train_seeds(wildcards, output):
    """The seed of each run a training job trains, from its train_metrics.nc (.../runs/n{n}_seed{seed}/)."""
    outs = [output.metrics] if isinstance(output.metrics, str) else output.metrics  # one run, or a group's list
    return " ".join(Path(out).parent.name.rsplit("_seed", 1)[1] for out in outs)


# Sampling, scoring and quality (sample.smk, score.smk, quality.smk, evaluate_grouped.smk): one command per
# stage for the per-run and the grouped rules, so that grouping the evaluation (train.group_evaluation) reruns
# nothing: the commands take one entry per run in every per-run option.
SAMPLE_SHELL = (
    "diffmem sample --train-metrics {input.metrics} --checkpoints {input.checkpoints} --sample-cfg {params.sample}"
    " --run-settings {params.run} --device {params.device} --out {output} > {log} 2>&1"
)
SCORE_SHELL = (
    "diffmem score --samples {input.samples} --train {input.train} --dataset {input.dataset}"
    " --score-cfg {params.score} --run-settings {params.run} --out {output} > {log} 2>&1"
)
QUALITY_SHELL = (
    "diffmem quality --samples {input.samples} {params.metrics} {params.checkpoints} --train {input.train}"
    " --dataset {input.dataset} --data-cfg {params.data} --quality-cfg {params.quality}"
    " {params.classifier} --threads {threads} --out {output} > {log} 2>&1"
)


def optional_input_arg(option, name):
    """A param: `--option <the input's files>` where the rule has input `name`, else nothing (derived, untracked)."""
    return lambda wildcards, input: f"--{option} {getattr(input, name)}" if name in input.keys() else ""


def quality_needs_networks(exp):
    """Whether quality evaluates a trained run's networks (quality.exact's denoiser errors, synthetic data only)."""
    quality = EXPERIMENTS[exp]["quality"]
    return is_trained(exp) and quality["enabled"] and quality["exact"] and data_dim(exp) is not None
