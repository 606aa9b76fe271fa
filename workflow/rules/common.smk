# Config resolution, target lists and per-rule config slices. Rules only read from here.
import json
import shlex

from diffmem.config import (
    CLOSED_FORM,
    ConfigError,
    expand_sweeps,
    family_model,
    size_experiment,
    stable_hash,
    sweep_leaf_name,
    sweep_of,
    training_groups,
    validate_config,
)

try:
    CFG = validate_config(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

RESULTS = CFG["results_dir"]
# The experiments the per-run stages see: a sweep (model.width or model.strength a list) becomes one
# sub-experiment per value, "<name>/width32", run under results/<name>/width32/; the `sweep` rule then
# combines their cubes into results/<name>/cube.nc.
SWEEPS = {name: sweep_of(exp) for name, exp in CFG["experiments"].items() if sweep_of(exp) is not None}
# Each leaf's unset `resources:` are sized from its grid (src/diffmem/resources.py).
EXPERIMENTS = {name: size_experiment(exp) for name, exp in expand_sweeps(CFG["experiments"]).items()}


def R(template):
    """A path under the results folder: R("{exp}/cube.nc") -> "<results_dir>/{exp}/cube.nc"."""
    return f"{RESULTS}/{template}"


def RUN(name):
    """A file of one (n, seed) run: RUN("train.npz") -> "<results_dir>/{exp}/runs/n{n}_seed{seed}/train.npz"."""
    return R(f"{{exp}}/runs/n{{n}}_seed{{seed}}/{name}")

FIGURES = ["overview", "f_mem_vs_step", "f_mem_vs_step_over_n", "tau_mem_vs_n", "losses", "scaling"]
QUALITY_FIGURES = ["timescales", "quality_vs_step", "loss_gap", "p_delta_pos"]
RF_FIGURES = ["rf_losses", "rf_split_time"]


wildcard_constraints:
    exp=r"[A-Za-z][A-Za-z0-9_-]*(/(width|strength)[0-9][0-9.e+-]*)?",
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


def data_slice(wildcards):
    # n_train and seeds select branches; they must not invalidate the shared dataset file
    data = exp_cfg(wildcards)["data"]
    return as_arg({k: v for k, v in data.items() if k not in ("n_train", "seeds")})


def section(name):
    return lambda wildcards: as_arg(exp_cfg(wildcards)[name])


def model_slice(wildcards):
    # without the other families' keys: e.g. a network's training does not rerun when `strength` changes
    return as_arg(family_model(exp_cfg(wildcards)["model"]))


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


def upstream_hash(wildcards):
    exp = exp_cfg(wildcards)
    return stable_hash({k: exp[k] for k in ("data", "model", "train", "sample", "score")})


def runs(exp, pattern):
    data = EXPERIMENTS[exp]["data"]
    return [pattern.format(exp=exp, n=n, seed=s) for n in data["n_train"] for s in data["seeds"]]


def figure_names(exp):
    if is_rf(exp):
        return RF_FIGURES
    if is_closed_form(exp):
        return ["f_mem_vs_n"] + (["quality_vs_n"] if quality_enabled(exp) else [])
    return FIGURES + (QUALITY_FIGURES if quality_enabled(exp) else [])


def experiment_targets(exp):
    """Every file `snakemake` builds for one configured experiment (a sweep: its leaves and the sweep)."""
    if exp in SWEEPS:
        key, values = SWEEPS[exp]
        out = [R(f"{exp}/cube.nc"), R(f"{exp}/fit.nc"), R(f"{exp}/figures/sweep_{key}.png")]
        return out + [t for v in values for t in experiment_targets(sweep_leaf_name(exp, key, v))]
    out = [R(f"{exp}/cube.nc"), R(f"{exp}/fit.nc")]
    return out + [R(f"{exp}/figures/{name}.png") for name in figure_names(exp)]


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


def train_threads(wildcards):
    return exp_cfg(wildcards)["train"]["threads"]


def job_cpus(wildcards):
    """cpus_per_task (and threads: Snakemake exports OMP_NUM_THREADS) of sampling, scoring and quality."""
    return resources_of(wildcards.exp)["cpus_per_job"]


def data_dim(exp):
    """d of synthetic data (for P(Delta > 0) against n/d); None for image data."""
    data = EXPERIMENTS[exp]["data"]
    return data["dim"] if data["dataset"] in ("gmm", "gaussian") else None


def dim_flag(wildcards):
    return f"--data-dim {data_dim(wildcards.exp)}" if data_dim(wildcards.exp) else ""


def quality_enabled(exp):
    return EXPERIMENTS[exp]["quality"]["enabled"]


CLASSIFIER_KEYS = ("classifier_epochs", "classifier_lr", "seed")


def classifier_slice(wildcards):
    quality = exp_cfg(wildcards)["quality"]
    return as_arg({k: quality[k] for k in CLASSIFIER_KEYS})


def quality_inputs(wildcards):
    inputs = {
        "samples": RUN("samples.json"),
        "train": RUN("train.npz"),
        "dataset": R("{exp}/data/dataset.npz"),
    }
    if is_trained(wildcards.exp):
        inputs["metrics"] = RUN("train_metrics.nc")
    if "classifier" in exp_cfg(wildcards)["quality"]["feature_spaces"]:
        inputs["classifier"] = R("{exp}/classifier/classifier.pt")
    return inputs


def cube_inputs(wildcards):
    inputs = {"scores": runs(wildcards.exp, RUN("scores.nc"))}
    if is_trained(wildcards.exp):
        inputs["metrics"] = runs(wildcards.exp, RUN("train_metrics.nc"))
    if quality_enabled(wildcards.exp):
        inputs["quality"] = runs(wildcards.exp, RUN("quality.nc"))
    return inputs


# --- Grouped training (workflow/rules/train_grouped.smk) ------------------------------------------
# Added for grouped training; nothing above depends on it. An experiment with `train.grouped: true`
# trains all seeds of one n in one job (jobs generated per experiment and n). The per-(n, seed)
# `train` job must not claim those files, so train.smk constrains it with exp=UNGROUPED_EXPS
# (concrete outputs already win over wildcard ones; the constraint makes the intent explicit).
import re


def grouped_experiments():
    return [name for name, exp in EXPERIMENTS.items() if exp["train"]["grouped"] and is_trained(name)]


def exp_regex(names):
    """A wildcard regex matching exactly these experiment names; matches nothing if there are none."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


UNGROUPED_EXPS = names_where(lambda name: is_trained(name) and name not in grouped_experiments())
TRAINED_EXPS = names_where(is_trained)
CLOSED_FORM_EXPS = names_where(is_closed_form)
SAMPLED_EXPS = names_where(lambda name: not is_rf(name))
RF_EXPS = names_where(is_rf)


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
    seen = {}
    for exp, label, _ in jobs:
        name = grouped_rule_name(exp, label)
        if seen.setdefault(name, exp) != exp:
            raise WorkflowError(f"config error: experiments '{seen[name]}' and '{exp}' both give the grouped training "
                                f"rule name '{name}' (in rule names, '_' stands for any other non-word character); rename one of them")
    return jobs


def grouped_rule_name(exp, label):
    safe = re.sub(r"\W", "_", exp)  # rule names are identifiers; experiment names may hold '-' and '/'
    return f"train_grouped_{safe}_{label}"
