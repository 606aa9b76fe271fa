"""Load, validate and resolve diffmem's configuration.

`load_config(path)` reads a YAML file, validates it against `schemas/config.schema.yaml` (unknown
keys and wrong types fail naming the key), fills the schema's defaults and checks what the schema
cannot express (n larger than the pool, a missing npy file). Stages receive only the slice of an
experiment they use and turn it into a frozen dataclass with `<Section>Config.from_dict`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from diffmem.errors import ConfigError  # noqa: F401 - re-exported: stages import it with the config
from diffmem.images import count_images
from diffmem.names import DIGITS_SIZE, IMAGE_DATASETS, LABELLED_DATASETS
from diffmem.resources import size_resources

SECTIONS = ("data", "model", "train", "sample", "score", "fit", "quality", "resources")


def load_schema() -> dict:
    """The JSON schema of config.yaml: every key, its type, its default and what it means."""
    text = resources.files("diffmem").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: ~20x faster


SCHEMA = load_schema()


def resolve_ref(node: dict, root: dict) -> dict:
    """A schema node with its `$ref` replaced by the referenced definition; the node's own keys
    (a default, a description beside the `$ref`) win."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**resolve_ref(target, root), **{k: v for k, v in node.items() if k != "$ref"}}


def _fill_defaults(value: Any, schema: dict, root: dict) -> Any:
    schema = resolve_ref(schema, root)
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    props = schema.get("properties", {})
    for key, sub in props.items():
        sub_r = resolve_ref(sub, root)
        if key not in value:
            if "default" in sub_r:
                value[key] = copy.deepcopy(sub_r["default"])
            elif sub_r.get("type") == "object" and key in SECTIONS:
                value[key] = {}
        if key in value:
            value[key] = _fill_defaults(value[key], sub_r, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in value:
            if key not in props:
                value[key] = _fill_defaults(value[key], extra, root)
    return value


def _format_error(err) -> str:
    where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    if err.validator == "additionalProperties":
        return f"config error at '{where}': {err.message} (unknown key; check the spelling)"
    return f"config error at '{where}': {err.message}"


def validate_config(raw: dict) -> dict:
    """Validate a raw config dict, fill defaults and run semantic checks; return the resolved dict."""
    if not isinstance(raw, dict):
        raise ConfigError("config error: the config must be a mapping of keys to values")
    import jsonschema  # only validation needs it; stages get already-validated slices

    schema = SCHEMA
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_format_error(errors[0]))
    raw = copy.deepcopy(raw)
    if raw.get("gpus_per_train_job") is not None:  # the default of every experiment's own key
        for exp in raw["experiments"].values():
            exp.setdefault("resources", {}).setdefault("gpus_per_train_job", raw["gpus_per_train_job"])
    cfg = _fill_defaults(raw, schema, schema)
    for name, exp in cfg["experiments"].items():
        resolve_sizes(name, exp["data"])
    cfg.setdefault("run", list(cfg["experiments"]))
    for name in cfg["run"]:
        if name not in cfg["experiments"]:
            raise ConfigError(f"config error at 'run': experiment '{name}' is not defined under 'experiments'")
    for name, exp in cfg["experiments"].items():
        check_experiment(name, exp, files=name in cfg["run"])
        resolve_grouping(exp)
    return cfg


def load_config(path: str | Path, **overrides: Any) -> dict:
    """Read, validate and resolve a config file; `overrides` set top-level keys, as `--config key=value`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config error: config file {path} does not exist")
    with open(path) as fh:
        raw = yaml.safe_load(fh)
    return validate_config({**(raw or {}), **overrides})


def pool_size(data: dict) -> int:
    """Number of points available for training sets (the dataset minus the test split)."""
    ds = data["dataset"]
    if ds == "digits":
        total = DIGITS_SIZE
    elif ds in ("gmm", "gaussian"):
        return int(data["pool_size"])
    elif ds in IMAGE_DATASETS:
        total = count_images(data)
    else:
        path = data.get("path")
        if not path:
            raise ConfigError("config error at 'data.path': dataset 'npy' needs a path to a .npy file")
        if not Path(path).exists():
            raise ConfigError(f"config error at 'data.path': npy file {path} does not exist")
        try:
            total = int(np.load(path, mmap_mode="r").shape[0])
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            raise ConfigError(f"config error at 'data.path': cannot read {path} as .npy ({exc})") from exc
    return total - int(data["n_test"])


def resolve_sizes(name: str, data: dict) -> None:
    """Fill data.n_train from data.psi_n (n = round(psi_n * dim)); exactly one of the two must be given."""
    where = f"experiments.{name}.data"
    psi_n = data.pop("psi_n", None)
    if psi_n is None:
        if "n_train" not in data:
            raise ConfigError(f"config error at '{where}': give the training-set sizes as n_train or psi_n")
        return
    if "n_train" in data:
        raise ConfigError(f"config error at '{where}.psi_n': give n_train or psi_n, not both")
    if data["dataset"] not in ("gmm", "gaussian"):
        raise ConfigError(f"config error at '{where}.psi_n': psi_n = n / dim needs gmm or gaussian data, "
                          f"not '{data['dataset']}'; give n_train")
    sizes = [max(1, round(p * data["dim"])) for p in psi_n]
    if len(set(sizes)) != len(sizes):
        raise ConfigError(f"config error at '{where}.psi_n': {psi_n} gives repeated n = {sizes} at dim {data['dim']}")
    data["n_train"] = sizes


# Model keys that belong to one family only; the other families ignore them, so they are dropped from
# the slices those stages receive (changing them must not rerun, e.g., network training).
FAMILY_KEYS = {
    "empirical": ("regularization", "strength"),
    "random_features": ("psi_p", "rf_time", "rf_num_noise", "rf_solver", "rf_ridge"),
    "linear_exact": ("linear_variant", "linear_time", "linear_dims", "linear_repeats", "linear_populations"),
}
# Families with no training stage: their denoiser is computed from the training set.
CLOSED_FORM = ("empirical", "linear")
# Keys a list turns into an extra cube dimension (one sub-experiment per value), with their section.
SWEEP_KEYS = {"width": "model", "strength": "model", "tikhonov": "train"}


def family_model(model: dict) -> dict:
    """The model slice without the keys of the other families."""
    foreign = {k for fam, keys in FAMILY_KEYS.items() if fam != model.get("family", schema_default("model", "family")) for k in keys}
    return {k: v for k, v in model.items() if k not in foreign}


def sweep_of(exp: dict) -> tuple[str, list] | None:
    """(key, values) of the experiment's sweep, or None when every sweepable key is a scalar."""
    found = [(k, exp[sec][k]) for k, sec in SWEEP_KEYS.items() if isinstance(exp.get(sec, {}).get(k), list)]
    return found[0] if found else None


def sweep_leaf_name(parent: str, key: str, value: float) -> str:
    """Name (and results sub-folder) of one value of a sweep: 'unet_widths/width32', 'emp/strength0.01'."""
    return f"{parent}/{key}{value:g}"


def expand_sweeps(experiments: dict) -> dict[str, dict]:
    """The experiments the per-run stages see: a sweep experiment becomes one leaf per swept value."""
    leaves = {}
    for name, exp in experiments.items():
        sweep = sweep_of(exp)
        if sweep is None:
            leaves[name] = exp
            continue
        key, values = sweep
        for value in values:
            leaf = copy.deepcopy(exp)
            leaf[SWEEP_KEYS[key]][key] = value
            leaves[sweep_leaf_name(name, key, value)] = leaf
    return leaves


def check_family(name: str, exp: dict) -> None:
    model, data, where = exp["model"], exp["data"], f"experiments.{name}.model"
    family = model["family"]
    lists = [k for k, sec in SWEEP_KEYS.items() if isinstance(exp[sec][k], list)]
    if len(lists) > 1:
        raise ConfigError(f"config error at '{where}': sweep one key at a time, not {lists}")
    if isinstance(model["strength"], list) and family != "empirical":
        raise ConfigError(f"config error at '{where}.strength': a strength sweep needs family empirical, not '{family}'")
    if isinstance(model["width"], list) and family != "network":
        raise ConfigError(f"config error at '{where}.width': a width sweep needs family network, not '{family}'")
    tikhonov = exp["train"]["tikhonov"]
    if (isinstance(tikhonov, list) or tikhonov > 0) and family != "network":
        raise ConfigError(f"config error at 'experiments.{name}.train.tikhonov': the Tikhonov penalty is a training "
                          f"loss term (family network), not of family '{family}' (its closed form: model.regularization "
                          "tikhonov)")
    for key in lists:
        values = exp[SWEEP_KEYS[key]][key]
        leaves = [sweep_leaf_name(name, key, v) for v in values]
        if len(set(leaves)) != len(leaves):
            raise ConfigError(f"config error at 'experiments.{name}.{SWEEP_KEYS[key]}.{key}': values {values} coincide to 6 significant "
                              "digits (the sub-experiment folders would collide)")
    strengths = model["strength"] if isinstance(model["strength"], list) else [model["strength"]]
    if family == "empirical" and model["regularization"] in ("consistency",) and any(s <= 0 for s in strengths):
        raise ConfigError(f"config error at '{where}.strength': the consistency floor tau must be > 0 "
                          "(tau = 0 is the unregularized empirical denoiser: use regularization none)")
    if family == "random_features":
        if data["dataset"] != "gaussian":
            raise ConfigError(f"config error at '{where}.family': random_features is the paper's model on "
                              f"isotropic Gaussian data (dataset gaussian), not '{data['dataset']}'")
        if model["rf_solver"] == "gd" and model["rf_num_noise"] < 1:
            raise ConfigError(f"config error at '{where}.rf_num_noise': gradient descent draws rf_num_noise >= 1 noise "
                              "samples per point every step (0, the analytic noise average, is for rf_solver flow)")
        if exp["quality"]["enabled"]:
            raise ConfigError(f"config error at 'experiments.{name}.quality.enabled': random_features is trained "
                              "at one diffusion time and generates no samples; set quality.enabled false")
    if family == "linear_exact":
        if data["dataset"] != "gaussian":
            raise ConfigError(f"config error at '{where}.family': linear_exact is evaluated in closed form on "
                              f"isotropic Gaussian data (dataset gaussian), not '{data['dataset']}'")
        if exp["quality"]["divergence"] != "l2":
            raise ConfigError(f"config error at 'experiments.{name}.quality.divergence': linear_exact computes the "
                              "closed-form L2 distance; set divergence l2 (Hellinger needs samples: family linear)")
        for d in model["linear_dims"]:
            sizes = [max(2, round(n / data["dim"] * d)) for n in data["n_train"]]
            if len(set(sizes)) != len(sizes):
                raise ConfigError(f"config error at '{where}.linear_dims': the n / d grid gives repeated n = {sizes} "
                                  f"at d = {d}")
    if family != "network" and exp["train"]["grouped"] is True:
        what = "has no training" if family in (*CLOSED_FORM, "linear_exact") else "is trained by its own rf_train stage"
        raise ConfigError(f"config error at 'experiments.{name}.train.grouped': family '{family}' {what}; "
                          "grouped training is for family network")
    if family != "network" and exp["train"]["group_evaluation"]:
        raise ConfigError(f"config error at 'experiments.{name}.train.group_evaluation': family '{family}' has no "
                          "training jobs whose groups the evaluation could follow; grouped evaluation is for family network")


def resolve_grouping(exp: dict) -> None:
    """train.grouped auto -> true when each training job holds a GPU (gpus_per_train_job > 0) and the
    network is an MLP (mlp, time_mlp, time_mlp_emb) or linear, else false.

    Measured (benchmarks/README.md): a job that holds a whole GPU trains k grouped models at ~k x the
    model-steps/s of one (9.1x at k = 16 on an H100) because small models are launch-bound; on CPU,
    and on a GPU that concurrent single-model jobs share, k processes match or beat a group of one
    n's seeds (only many tiny models gain there: set grouped true with group_by experiment). The
    U-Net never gains: vmap turns its convolutions into grouped convolutions, and on the H100 a group
    of 4 ran at 12.7 model-steps/s against 18.1 for one U-Net per job.
    """
    train, model = exp["train"], exp["model"]
    if train["grouped"] == "auto":
        train["grouped"] = (model["family"] == "network" and model["arch"] != "unet"
                            and exp["resources"]["gpus_per_train_job"] > 0)


def training_groups(exp: dict) -> list[tuple[str, list[tuple[int, int]]]]:
    """(label, [(n, seed), ...]) of every grouped training job of an experiment (train.group_by, max_group)."""
    data, train = exp["data"], exp["train"]
    ns, seeds = data["n_train"], data["seeds"]
    if train["group_by"] == "n":
        groups = [(f"n{n}", [(n, s) for s in seeds]) for n in ns]
    elif train["group_by"] == "seed":
        groups = [(f"seed{s}", [(n, s) for n in ns]) for s in seeds]
    else:
        groups = [("all", [(n, s) for n in ns for s in seeds])]
    size = train["max_group"]
    if not size:
        return groups
    out = []
    for label, members in groups:
        parts = [members[i:i + size] for i in range(0, len(members), size)]
        out += [(label if len(parts) == 1 else f"{label}_part{j}", part) for j, part in enumerate(parts)]
    return out


def size_experiment(exp: dict) -> dict:
    """Fill the experiment's unset `resources:` from its grid (src/diffmem/resources.py); return exp.

    A grouped experiment's training requests are sized for its largest group.
    """
    members = max(len(m) for _, m in training_groups(exp)) if exp["train"]["grouped"] is True else 1
    size_resources(exp, len(checkpoint_grid(exp["train"])), members=members)
    return exp


def data_missing(data: dict) -> bool:
    """Whether the .npy file or image folder that data.path names is absent."""
    path = data.get("path")
    return data["dataset"] in ("npy", *IMAGE_DATASETS) and bool(path) and not Path(path).exists()


def check_experiment(name: str, exp: dict, *, files: bool = True) -> None:
    """Semantic checks the JSON schema cannot express.

    files false (an experiment not in `run`) passes over the checks of an absent data.path or
    quality.inception_weights: a config can hold experiments whose data only some machines have (the
    placeholders of config.yaml's celeba_paper), and they are checked when they run.
    """
    data = exp["data"]
    where = f"experiments.{name}"
    check_family(name, exp)
    if files or not data_missing(data):
        size = pool_size(data)
        if size < 1:
            raise ConfigError(f"config error at '{where}.data.n_test': the test split ({data['n_test']}) leaves no training pool")
        too_big = [n for n in data["n_train"] if n > size]
        if too_big:
            raise ConfigError(
                f"config error at '{where}.data.n_train': n = {too_big} larger than the pool of {size} points "
                f"({data['dataset']} minus n_test = {data['n_test']})"
            )
        if data.get("twin"):
            check_twin(name, exp, size)
    model = exp["model"]
    if model["emb_dim"] % 2:
        raise ConfigError(f"config error at '{where}.model.emb_dim': must be even, got {model['emb_dim']}")
    widths = model["width"] if isinstance(model["width"], list) else [model["width"]]
    if model["arch"] == "time_mlp" and any(w % 2 for w in widths):
        raise ConfigError(f"config error at '{where}.model.width': time_mlp encodes the timestep in cos/sin pairs, "
                          f"so the width must be even; got {model['width']}")
    if data["pixel_scale"] != "symmetric" and data["dataset"] not in ("digits", *IMAGE_DATASETS):
        raise ConfigError(f"config error at '{where}.data.pixel_scale': pixel scales are for digits and images, "
                          f"not '{data['dataset']}'")
    if model["dropout"] > 0 and model["arch"] != "unet":
        raise ConfigError(f"config error at '{where}.model.dropout': dropout is a U-Net option (arch unet), "
                          f"not of arch '{model['arch']}'")
    if model["family"] != "network" and exp["train"]["center"] != "none":
        raise ConfigError(f"config error at '{where}.train.center': centring applies to trained networks "
                          f"(family network), not to family '{model['family']}'")
    if model["arch"] == "unet" and data["dataset"] in ("gmm", "gaussian"):
        raise ConfigError(f"config error at '{where}.model.arch': unet needs image-shaped data, not '{data['dataset']}'")
    quality = exp["quality"]
    if quality["enabled"]:
        if "classifier" in quality["feature_spaces"] and data["dataset"] not in LABELLED_DATASETS:
            raise ConfigError(f"config error at '{where}.quality.feature_spaces': the classifier space needs labels "
                              f"(dataset digits or cifar10), not '{data['dataset']}'")
        if "inception" in quality["feature_spaces"] and not quality["inception_weights"]:
            raise ConfigError(f"config error at '{where}.quality.inception_weights': the inception space needs a "
                              "local weights file (weights cannot be downloaded at run time)")
        if files and quality["inception_weights"] and not Path(quality["inception_weights"]).exists():
            raise ConfigError(f"config error at '{where}.quality.inception_weights': {quality['inception_weights']} "
                              "does not exist")
        synthetic = data["dataset"] in ("gmm", "gaussian")
        if quality["population"] == "exact" and not synthetic:
            raise ConfigError(f"config error at '{where}.quality.population': exact needs gmm or gaussian data")
    sample = exp["sample"]
    wants = {"heun": "edm", "ddim": "ddpm"}.get(sample["sampler"])
    if wants and model["parameterization"] != wants:
        raise ConfigError(f"config error at '{where}.sample.sampler': {sample['sampler']} samples the {wants} "
                          f"parameterization, not '{model['parameterization']}' (auto picks the matching one)")
    if sample["sigma_min"] >= sample["sigma_max"]:
        raise ConfigError(f"config error at '{where}.sample.sigma_min': must be below sigma_max")
    if model["beta_min"] >= model["beta_max"]:
        raise ConfigError(f"config error at '{where}.model.beta_min': must be below beta_max")


def check_twin(name: str, exp: dict, size: int) -> None:
    """data.twin needs a family that samples and a pool holding two disjoint sets of the largest n."""
    where = f"config error at 'experiments.{name}.data.twin'"
    if exp["model"]["family"] == "random_features":
        raise ConfigError(f"{where}: random_features generates no samples to compare")
    largest = max(exp["data"]["n_train"])
    if 2 * largest > size:
        raise ConfigError(f"{where}: the twin needs two disjoint training sets of n = {largest}, "
                          f"2 x {largest} = {2 * largest} points, but the pool has {size}")


def stable_hash(obj: Any, length: int = 12) -> str:
    """Short, order-independent hash of a JSON-serialisable object (config provenance, cache keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def checkpoint_grid(train: dict) -> list[int]:
    """Checkpoint steps: explicit, the paper's grid or log-spaced (`checkpoints_per_decade`), always with 0
    and max_steps."""
    max_steps = int(train["max_steps"])
    explicit = train.get("checkpoint_steps")
    if explicit:
        steps = {int(s) for s in explicit if int(s) <= max_steps}
    elif train.get("checkpoint_grid") == "paper":
        steps = set(paper_checkpoint_steps())
    else:
        per_decade = float(train["checkpoints_per_decade"])
        num = int(np.floor(np.log10(max_steps) * per_decade)) + 1
        steps = {int(round(10 ** (i / per_decade))) for i in range(num)}
    steps |= {0, max_steps}
    return sorted(s for s in steps if s <= max_steps)


def paper_checkpoint_steps() -> list[int]:
    """The checkpoint steps of arXiv 2505.17638's code (Experiments/src/Utils/cfg.py, get_training_times).

    Three log-spaced stretches, each rounded down to a multiple of its spacing: 10 points from 251 to
    10^4 (multiples of 250), 90 from 10^4 to 10^6 and 10 from 10^6 to 10^7 (multiples of 5,000); and 0.
    """
    def stretch(lo: float, hi: float, num: int, mod: int) -> set[int]:
        points = np.logspace(np.log10(lo), np.log10(hi), num)
        return {int(p - p % mod) for p in points}

    return sorted({0} | stretch(251, 1e4, 10, 250) | stretch(1e4, 1e6, 90, 5000) | stretch(1e6, 1e7, 10, 5000))


def schema_default(section: str, key: str) -> Any:
    """The schema's default of `<section>.<key>` (lists as tuples, as the dataclasses hold them)."""
    value = SCHEMA["$defs"][section]["properties"][key]["default"]
    return tuple(value) if isinstance(value, list) else value


def schema_defaults(section: str):
    """Give a config dataclass's fields the schema's defaults of `section`, the one place they are declared.

    Applied below @dataclass, so the dataclass sees them as ordinary defaults; a field the schema gives no
    default to (data.dataset, the required keys) stays required."""

    def fill(cls):
        props = SCHEMA["$defs"][section]["properties"]
        for name in cls.__annotations__:
            if name in props and "default" in props[name] and name not in cls.__dict__:
                setattr(cls, name, schema_default(section, name))
        return cls

    return fill


def _from_dict(cls, d: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"config error: unknown keys {sorted(unknown)} for {cls.__name__}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**kwargs)


@dataclass(frozen=True)
@schema_defaults("data")
class DataConfig:
    dataset: str
    n_train: tuple[int, ...] = ()
    seeds: tuple[int, ...] = ()
    n_test: int
    split_seed: int
    dim: int
    pool_size: int
    gmm_mu: float
    path: str | None
    image_shape: tuple[int, ...] | None
    scale_to_unit: bool
    pixel_scale: str
    image_size: int | None
    grayscale: bool
    max_images: int | None
    twin: bool

    from_dict = classmethod(_from_dict)


@dataclass(frozen=True)
@schema_defaults("model")
class ModelConfig:
    family: str
    arch: str
    parameterization: str
    width: int
    depth: int
    emb_dim: int
    sigma_data: float
    channel_mult: tuple[int, ...]
    num_res_blocks: int
    attn_levels: tuple[int, ...]
    beta_min: float
    beta_max: float
    num_timesteps: int
    dropout: float
    regularization: str
    strength: float
    psi_p: float
    rf_time: float
    rf_num_noise: int
    rf_solver: str
    rf_ridge: float
    linear_variant: str
    linear_time: float
    linear_dims: tuple[int, ...]
    linear_repeats: int
    linear_populations: tuple[int, ...] | None

    from_dict = classmethod(_from_dict)


@dataclass(frozen=True)
@schema_defaults("train")
class TrainConfig:
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    tikhonov: float
    batch_size: int
    max_steps: int
    checkpoints_per_decade: float
    checkpoint_steps: tuple[int, ...] | None
    checkpoint_grid: str
    center: str
    ema_decay: float | None
    grad_clip: float | None
    p_mean: float
    p_std: float
    probe_size: int
    probe_sigma: float | None
    device: str
    threads: int
    log_every: int
    resume_every_min: float
    grouped: bool | str  # validate_config resolves auto to true or false
    group_by: str
    max_group: int | None
    group_evaluation: bool
    stack: int | str  # auto, or at most this many runs in one stack
    precision: str
    tf32: bool
    compile: bool
    kernel: str
    channels_last: bool
    keep: str

    from_dict = classmethod(_from_dict)

    # Keys that change where training stops or how it is run, not the trajectory: a run with a
    # different value may resume from the same checkpoints.
    TRAJECTORY_FREE = (
        "max_steps", "checkpoints_per_decade", "checkpoint_steps", "checkpoint_grid", "device", "threads", "log_every", "grouped",
        "compile", "kernel", "tf32", "channels_last", "resume_every_min", "group_by", "max_group", "group_evaluation", "stack", "keep",
    )


@dataclass(frozen=True)
@schema_defaults("sample")
class SampleConfig:
    num_samples: int
    num_steps: int
    sigma_min: float
    sigma_max: float
    rho: float
    noise_seed: int
    batch_size: int
    use_ema: bool
    sampler: str
    stack_checkpoints: int
    kernel: str

    from_dict = classmethod(_from_dict)


@dataclass(frozen=True)
@schema_defaults("score")
class ScoreConfig:
    ratio_threshold: float
    num_bootstrap: int
    chunk_size: int
    device: str

    from_dict = classmethod(_from_dict)


@dataclass(frozen=True)
@schema_defaults("quality")
class QualityConfig:
    enabled: bool
    baselines: bool
    feature_spaces: tuple[str, ...]
    inception_weights: str | None
    inception_sha256: str | None
    num_reference: int
    kid_subset_size: int
    kid_num_subsets: int
    exact: bool
    denoiser_sigmas: tuple[float, ...]
    num_probe: int
    e_tg: bool
    divergence: str
    bandwidth: str | float
    num_population: int
    num_mc: int
    population: str
    classifier_epochs: int
    classifier_lr: float
    seed: int

    from_dict = classmethod(_from_dict)


@dataclass(frozen=True)
@schema_defaults("fit")
class FitConfig:
    tau_mem_threshold: float
    horizons: tuple[int, ...] | None
    num_bootstrap: int
    ci_level: float
    tau_gen_metric: str | None
    tau_gen_tolerance: float
    tau_gen_threshold: float | None
    rf_gap: float
    rf_split: str
    rf_compare: tuple[str, ...]
    tau_mem_levels: tuple[float, ...]
    tau_gen_tolerances: tuple[float, ...]
    lack_of_fit_alpha: float
    tau_gen_level: float | None
    tau_gen_levels: tuple[float, ...]

    from_dict = classmethod(_from_dict)


# Run settings: keys that change how a job runs (threads, devices, logging, timers, batching of
# evaluations, how training jobs are grouped), not what it writes. A changed Snakemake param reruns the
# job and everything downstream, so the rules pass these keys apart from the section's other keys, as
# `--run-settings '<json>'` from a param that Snakemake does not track (workflow/rules/common.smk,
# `run_settings`); the stage merges them back with `read_slice`. Keys that change the numbers a job
# writes are not here; docs/reruns.md says why the device, tf32 and compile are.
RUN_SETTINGS = {
    "train": ("device", "threads", "log_every", "resume_every_min", "grouped", "group_by", "max_group",
              "group_evaluation", "stack", "tf32", "compile", "kernel", "channels_last", "keep"),
    "sample": ("batch_size", "stack_checkpoints"),
    "score": ("chunk_size", "device"),
}


# Keys added after results existed, whose default is what diffmem did before: at that default they are
# left out of a section's result keys (the rules' params) and of the trajectory hash, so that updating
# diffmem reruns and retrains nothing; the stages fill them back from the schema.
QUIET_DEFAULTS = {
    "data": ("pixel_scale",),
    "fit": ("horizons", "rf_compare"),
    "model": ("dropout", "linear_populations"),
    "train": ("center", "checkpoint_grid", "tikhonov"),
    "quality": ("baselines",),
}


def without_quiet_defaults(section: str, values: dict) -> dict:
    """`values` without the QUIET_DEFAULTS keys of `section` that hold their (schema) default."""
    quiet = QUIET_DEFAULTS.get(section, ())
    return {k: v for k, v in values.items() if not (k in quiet and v == schema_default(section, k))}


def split_run_settings(section: str, values: dict) -> tuple[dict, dict]:
    """(result keys, run settings) of one resolved config section; the result keys leave out QUIET_DEFAULTS."""
    run = RUN_SETTINGS.get(section, ())
    result = without_quiet_defaults(section, {k: v for k, v in values.items() if k not in run})
    return result, {k: v for k, v in values.items() if k in run}


def read_json_arg(text: str) -> dict:
    """Parse a config slice passed on the command line as JSON (by the Snakemake rules) or a path to one."""
    candidate = Path(text)
    if not text.lstrip().startswith("{") and candidate.exists():
        text = candidate.read_text()
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config error: cannot parse config slice as JSON ({exc})") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"config error: a config slice must be a JSON object, got {type(values).__name__}")
    return values


def read_slice(section: str, text: str, run_settings: str | None = None) -> dict:
    """A section's slice (JSON or a path) with its run settings (`--run-settings`, JSON) merged in.

    The run settings may hold only the section's RUN_SETTINGS keys, and no key may come from both (a
    slice written by hand may carry its run settings itself)."""
    values = read_json_arg(text)
    settings = read_json_arg(run_settings) if run_settings else {}
    allowed = set(RUN_SETTINGS.get(section, ()))
    if set(settings) - allowed:
        raise ConfigError(f"config error: {sorted(set(settings) - allowed)} are not run settings of '{section}' "
                          f"(those are {sorted(allowed)})")
    both = set(settings) & set(values)
    if both:
        raise ConfigError(f"config error: {sorted(both)} given both in the '{section}' slice and its run settings")
    return values | settings



# the twin of seed s trains with seed s + TWIN_SEED_OFFSET (its own initialisation and batch draws);
# its data subset still comes from seed s's permutation (data.subset_indices(..., twin=True))
TWIN_SEED_OFFSET = 1000


TWIN_SUFFIX = "/twin"


def twin_name(exp: str) -> str:
    return f"{exp}{TWIN_SUFFIX}"


def is_twin(exp: str) -> bool:
    return exp.endswith(TWIN_SUFFIX)


def experiment_name_pattern() -> str:
    """A regex of every experiment name the per-run stages see (the workflow's {exp} wildcard): a
    configured name (the schema's pattern), a sweep leaf of any SWEEP_KEYS key (sweep_leaf_name writes a
    value >= 0 with :g, so digits, '.' and an exponent) and a twin of either (twin_name).

    Built from those definitions, so a new sweep key cannot be left out: a leaf the pattern missed had
    no rule for its dataset and training sets, which Snakemake reported as a MissingInputException at
    the leaf's training rule, per-run or grouped."""
    configured = SCHEMA["properties"]["experiments"]["propertyNames"]["pattern"].removeprefix("^").removesuffix("$")
    keys = "|".join(re.escape(key) for key in SWEEP_KEYS)
    return rf"{configured}(/({keys})[0-9][0-9.e+-]*)?({re.escape(TWIN_SUFFIX)})?"


def twin_experiments(experiments: dict[str, dict]) -> dict[str, dict]:
    """The twin experiment `<name>/twin` of every (leaf) experiment with data.twin on: the same config
    with seeds shifted by TWIN_SEED_OFFSET and twin off (a twin has no twin)."""
    out = {}
    for name, exp in experiments.items():
        if not exp["data"].get("twin"):
            continue
        twin = copy.deepcopy(exp)
        twin["data"]["twin"] = False
        twin["data"]["seeds"] = [int(s) + TWIN_SEED_OFFSET for s in exp["data"]["seeds"]]
        out[twin_name(name)] = twin
    return out
