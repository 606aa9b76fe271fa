"""Resource requests of every job, sized from the experiment's grid when the config leaves them out.

Snakemake (and the SLURM executor) schedule by what a rule declares: `mem_mb`, `runtime` (minutes),
`cpus_per_task` and, for training and sampling, `gpu`. A key given under an experiment's
`resources:` is used as is; a key left out (null) is filled here from the grid: the data dimension,
the pool and training-set sizes, the model's size, the number of steps and checkpoints, the number
of samples and the members of a grouped training job.

The estimates are deliberately coarse and on the safe side (they are cluster requests, not
predictions): compute at `CPU_GFLOPS_PER_THREAD` per thread on CPU (2-4x below what the
benchmarks measure on a modern core) or, on a GPU, a fixed `GPU_STEP_OVERHEAD_S` per launch-bound
step plus compute at `GPU_GFLOPS`, times `SAFETY`, plus `BASE_RUNTIME_MIN` for start-up and I/O.
A training job that outlives its request is not lost: it writes `resume.pt` on SIGTERM and every
`train.resume_every_min` minutes, and the retried job continues from there.

Nothing here imports torch: the Snakefile calls it while building the DAG. Parameter counts and
FLOPs follow the constructions in `models/mlp.py` (both MLPs), `models/unet.py` and `families/linear.py`.
The FLOPs of a training step, a run's sampling, scoring and Inception features are written once here
(`train_step_flops`, `sampler_evals`, `score_flops`, `inception_images`); `diffmem plan` adds them up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffmem.images import image_shape_of
from diffmem.names import IMAGE_DATASETS

CPU_GFLOPS_PER_THREAD = 20.0
GPU_GFLOPS = 8_000.0  # fp32 U-Net training on an H100 measured ~8 TFLOP/s (benchmarks/README.md)
GPU_MEASURED_ON = "H100"  # the device GPU_GFLOPS was measured on, a key of PUBLISHED_PEAKS
# Published dense peaks (TFLOP/s, no sparsity) from NVIDIA's data sheets, by precision: fp32 = CUDA
# cores, tf32 / bf16 = tensor cores. Matched on the device name, first match wins (benchmarks/bench_training.py).
PUBLISHED_PEAKS = [
    ("H200", "H200 (SXM)", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}),
    ("H100 PCIe", "H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0}),
    ("H100 NVL", "H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.0}),
    ("H100", "H100 SXM", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}),
    ("A100", "A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}),
]
# Forward FLOPs of one image through the FID Inception-v3 (metrics/features.py, every image resized to
# 299x299): torch's FlopCounterMode count, held to it by tests/test_plan.py
INCEPTION_FLOPS = 11.422e9
# bytes per sample per checkpoint of what scoring writes: the distance cache beside the samples (float64
# d1, d2, d_test, int64 nearest index) and scores.nc / cube.nc (float32 ratio, d1, d2, d_test, int64 nearest_train)
DISTANCE_CACHE_BYTES = 4 * 8
SCORE_BYTES = 4 * 4 + 8
GPU_STEP_OVERHEAD_S = 0.008  # one small-model step on an H100 is launch-bound (~6 ms measured)
SAFETY = 1.5
BASE_RUNTIME_MIN = 5
BASE_MEM_MB = 1000  # python + torch + numpy of one job
MB = 2**20

# keys of `resources:` and what the rules use them for
KEYS = (
    "train_mem_mb", "train_runtime_min", "gpus_per_train_job",
    "sample_mem_mb", "sample_runtime_min",
    "score_mem_mb", "score_runtime_min",
    "quality_mem_mb", "quality_runtime_min",
    "cpus_per_job",
    "small_mem_mb", "small_runtime_min",
)


def data_shape(data: dict) -> tuple[int, ...]:
    """Per-sample shape of an experiment's data: (C, H, W) for images, (D,) for flat data."""
    if data.get("image_shape"):
        return tuple(int(s) for s in data["image_shape"])
    dataset = data["dataset"]
    if dataset == "digits":
        return (1, 8, 8)
    if dataset in ("gmm", "gaussian"):
        return (int(data["dim"]),)
    if dataset in IMAGE_DATASETS:
        return image_shape_of(data)
    shape = np.load(data["path"], mmap_mode="r").shape  # checked readable by config.pool_size
    return tuple(int(s) for s in shape[1:])


def _mlp_params(dim: int, width: int, depth: int, emb_dim: int) -> int:
    linear = lambda i, o: i * o + o  # noqa: E731
    block = 3 * linear(width, width) + 2 * width  # fc1, emb, fc2 + LayerNorm
    return (linear(dim, width) + linear(emb_dim, width) + linear(width, width) + depth * block
            + 2 * width + linear(width, dim))


def _time_mlp_params(dim: int, width: int, depth: int, emb_dim: int | None) -> int:
    """models/mlp.py's TimeMLP: in, depth x (fc1, fc2 + LayerNorm), out; with emb_dim (time_mlp_emb) also
    MLP's embedding (emb_dim -> width -> width) and a width -> width projection per block."""
    linear = lambda i, o: i * o + o  # noqa: E731
    block = 2 * linear(width, width) + 2 * width
    params = linear(dim, width) + depth * block + linear(width, dim)
    if emb_dim is not None:
        params += linear(emb_dim, width) + linear(width, width) + depth * linear(width, width)
    return params


def _unet_convs(model: dict, shape: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """(c_in, c_out, kernel, pixels) of every convolution of the U-Net, as models/unet.py builds it.

    An attention layer at C channels and P pixels appears as its qkv and output 1x1 convolutions plus
    a pseudo-convolution (P, 2C, 1, P) carrying the FLOPs of its two P x P x C products (no parameters).
    """
    c, size = shape[0], shape[-1] * shape[-2]
    width, mults, blocks = model["width"], model["channel_mult"], model["num_res_blocks"]
    convs = [(c, width, 3, size)]
    skips, ch, pix = [width], width, size

    def res(c_in, c_out, pixels):
        out = [(c_in, c_out, 3, pixels), (c_out, c_out, 3, pixels)]
        return out + ([(c_in, c_out, 1, pixels)] if c_in != c_out else [])

    for lvl, mult in enumerate(mults):
        for _ in range(blocks):
            convs += res(ch, width * mult, pix)
            ch = width * mult
            skips.append(ch)
            if lvl in model["attn_levels"]:
                convs += [(ch, 3 * ch, 1, pix), (ch, ch, 1, pix), (pix, 2 * ch, 0, pix)]
        if lvl < len(mults) - 1:
            convs.append((ch, ch, 3, pix // 4))
            pix //= 4
            skips.append(ch)
    convs += res(ch, ch, pix) * 2 + [(ch, 3 * ch, 1, pix), (ch, ch, 1, pix), (pix, 2 * ch, 0, pix)]
    for lvl, mult in reversed(list(enumerate(mults))):
        for _ in range(blocks + 1):
            convs += res(ch + skips.pop(), width * mult, pix)
            ch = width * mult
            if lvl in model["attn_levels"]:
                convs += [(ch, 3 * ch, 1, pix), (ch, ch, 1, pix), (pix, 2 * ch, 0, pix)]
        if lvl > 0:
            pix *= 4
            convs.append((ch, ch, 3, pix))
    return convs + [(ch, c, 3, pix)]


@dataclass(frozen=True)
class ModelSize:
    """Size of a network for one sample: parameters, forward FLOPs, and activation floats (all layer
    outputs, kept for the backward pass; and the widest single output, the peak without gradients)."""

    params: int
    flops: float
    activations: float
    widest: float


def model_size(model: dict, shape: tuple[int, ...]) -> ModelSize:
    """The ModelSize of a network model config on data of this per-sample shape."""
    dim = math.prod(shape)
    arch = model["arch"]
    if arch == "mlp":
        params, width = _mlp_params(dim, model["width"], model["depth"], model["emb_dim"]), model["width"]
        return ModelSize(params, 2.0 * params, (6 * model["depth"] + 6) * width + 2 * dim, float(max(width, dim)))
    if arch in ("time_mlp", "time_mlp_emb"):
        width, depth = model["width"], model["depth"]
        params = _time_mlp_params(dim, width, depth, model["emb_dim"] if arch == "time_mlp_emb" else None)
        return ModelSize(params, 2.0 * params, (6 * depth + 2) * width + 2 * dim, float(max(width, dim)))
    if arch == "linear":  # families/linear.py: 8 knots of (W [D, D], b [D]), every knot applied per sample
        params = 8 * (dim * dim + dim)
        return ModelSize(params, 2.0 * params, 16.0 * dim, 8.0 * dim)
    convs = _unet_convs(model, shape)
    emb_ch = 4 * model["width"]
    conv_params = sum(ci * co * k * k + co for ci, co, k, _ in convs if k)
    # each residual block's embedding projection (emb_ch -> c_out) and its two GroupNorms (~4 c_out)
    res_out = [co for ci, co, k, _ in convs if k == 3]
    params = conv_params + (model["emb_dim"] + emb_ch + 2) * emb_ch + sum(res_out) // 2 * (emb_ch + 5)
    flops = sum(2.0 * ci * co * max(k, 1) ** 2 * pix for ci, co, k, pix in convs)
    # each output is kept ~3 times (norm, activation, conv); attention keeps its P x P scores
    outputs = [co * pix if k else ci * pix for ci, co, k, pix in convs]
    return ModelSize(params, flops, 3.0 * sum(outputs), float(max(outputs)))


def _minutes(seconds: float) -> int:
    """A runtime request: SAFETY x the estimate plus start-up, rounded up to 5 minutes."""
    return int(5 * math.ceil((BASE_RUNTIME_MIN + SAFETY * seconds / 60) / 5))


def _mb(nbytes: float, base: int = BASE_MEM_MB) -> int:
    """A memory request: base + SAFETY x the estimate, rounded up to 500 MB."""
    return int(500 * math.ceil((base + SAFETY * nbytes / MB) / 500))


def on_gpu(exp: dict) -> bool:
    return exp["resources"]["gpus_per_train_job"] > 0 or str(exp["train"]["device"]).startswith("cuda")


def train_step_flops(size: ModelSize, batch: int) -> float:
    """FLOPs of one training step of one model: forward + backward ~ 3 forwards (the backward computes
    the gradients of the inputs and of the weights, a forward's work each) on `batch` samples."""
    return 3.0 * size.flops * batch


def sampler_evals(model: dict, sample: dict) -> int:
    """Network evaluations per sample of the configured sampler (samplers.py): Heun's 2 per step but the
    last, or one per step for DDIM and Euler-Maruyama (sampler auto: Heun for edm, DDIM for ddpm)."""
    sampler = sample["sampler"]
    if sampler == "auto":
        sampler = "ddim" if model.get("parameterization") == "ddpm" else "heun"
    return 2 * sample["num_steps"] - 1 if sampler == "heun" else sample["num_steps"]


def score_flops(*, checkpoints: int, num_samples: int, n: int, n_test: int, dim: int) -> float:
    """FLOPs of a run's exact nearest-neighbour distances: every sample against the n training points
    and the n_test held-out points, one multiply-add per coordinate (scoring.nearest_neighbors)."""
    return 2.0 * checkpoints * num_samples * (n + n_test) * dim


def inception_images(exp: dict, checkpoints: int) -> int:
    """Images a run's quality job passes through Inception-v3 (0 without the inception space): every
    checkpoint's samples, and the reference drawn once (num_reference, at most the held-out split)."""
    quality = exp["quality"]
    if not quality["enabled"] or "inception" not in quality["feature_spaces"]:
        return 0
    return checkpoints * exp["sample"]["num_samples"] + min(quality["num_reference"], exp["data"]["n_test"])


def step_seconds(exp: dict, size: ModelSize, members: int, batch: int) -> float:
    """Estimated seconds of one (grouped) training step of `members` models of this size."""
    flops = train_step_flops(size, batch) * members
    if on_gpu(exp):
        return GPU_STEP_OVERHEAD_S + flops / (GPU_GFLOPS * 1e9)
    return flops / (CPU_GFLOPS_PER_THREAD * 1e9 * exp["train"]["threads"])


def train_resources(exp: dict, members: int = 1) -> dict[str, int]:
    """mem_mb and runtime of a training job of `members` models (1, or a grouped job's size).

    mem_mb is host memory: on a GPU the activations live in device memory and are not counted.
    """
    res, train, data, model = exp["resources"], exp["train"], exp["data"], exp["model"]
    if model["family"] in ("empirical", "linear"):  # closed forms: no training job is planned
        est_mem, est_s = 0.0, 0.0
    elif model["family"] == "random_features":  # rf.py: p = psi_p d features, rf_num_noise draws per point
        dim, n = data["dim"], max(data["n_train"])
        feats = round(model["psi_p"] * dim)
        rows = n * model["rf_num_noise"]
        est_mem = 4.0 * (feats * dim * 4 + rows * (feats + dim) * 3)
        est_s = train["max_steps"] * 6.0 * rows * feats * dim / (CPU_GFLOPS_PER_THREAD * 1e9 * train["threads"])
    else:
        shape = data_shape(data)
        size = model_size(model, shape)
        batch = min(train["batch_size"], max(data["n_train"]))
        # per member: parameters, gradients, two Adam moments, EMA, and the stacked training subset
        state = 5 * 4 * size.params + max(data["n_train"]) * math.prod(shape) * 4
        activations = 0.0 if on_gpu(exp) else batch * size.activations * 4
        est_mem = members * (state + activations) + 2 * 4 * math.prod(shape) * train["probe_size"] * 3
        est_s = train["max_steps"] * step_seconds(exp, size, members, batch)
    out = {"train_mem_mb": _mb(est_mem), "train_runtime_min": _minutes(est_s)}
    return {k: v if res.get(k) is None else res[k] for k, v in out.items()}


def size_resources(exp: dict, checkpoints: int, members: int = 1) -> dict[str, int]:
    """Fill every null key of exp['resources'] from the grid (in place) and return the section.

    `checkpoints` is the number of checkpoints of a run; `members` the size of the largest training job.
    """
    res, data, sample = exp["resources"], exp["data"], exp["sample"]
    family = exp["model"]["family"]
    shape = data_shape(data)  # random_features: gaussian data, (dim,)
    dim = math.prod(shape)
    n_max = max(data["n_train"])
    res.update(train_resources(exp, members))
    steps = checkpoints if family in ("network", "random_features") else 1
    num = sample["num_samples"]
    batch = min(sample["batch_size"], num)
    kept = steps * num * dim * 4 * 3  # every checkpoint's samples, plus the JSON text of them
    rate = CPU_GFLOPS_PER_THREAD * 1e9 * (res.get("cpus_per_job") or 1)
    if family == "network":
        size = model_size(exp["model"], shape)
        evals = steps * math.ceil(num / batch) * sampler_evals(exp["model"], sample)
        work = evals * size.flops * batch
        if on_gpu(exp):
            act, sample_s = 0.0, work / (GPU_GFLOPS * 1e9) + evals * GPU_STEP_OVERHEAD_S
        else:
            act, sample_s = batch * size.widest * 4 * 4, work / rate
    else:  # closed forms: every evaluation compares the batch with the n training points
        act = batch * n_max * 4 * 4
        sample_s = (2 * sample["num_steps"]) * num * n_max * dim * 6 / rate
    score_s = score_flops(checkpoints=steps, num_samples=num, n=n_max, n_test=data["n_test"], dim=dim) / rate
    # the quality stage runs Inception-v3 on the CPU, on cpus_per_job threads
    inception_s = inception_images(exp, steps) * INCEPTION_FLOPS / rate
    quality = exp["quality"]
    quality_points = quality["num_population"] + quality["num_reference"] + quality["num_mc"]
    runs = len(data["seeds"]) * len(data["n_train"])
    defaults = {
        "sample_mem_mb": _mb(kept + act + n_max * dim * 8),
        "sample_runtime_min": _minutes(sample_s),
        "score_mem_mb": _mb(kept + n_max * dim * 8 + exp["score"]["chunk_size"] * n_max * 4 * 2),
        "score_runtime_min": _minutes(score_s + 0.6 * steps),
        "quality_mem_mb": _mb(kept + 4.0 * dim * quality_points * 4, base=2 * BASE_MEM_MB),
        "quality_runtime_min": _minutes(60 * (1 + steps / 10) + inception_s),
        "cpus_per_job": 1,
        "small_mem_mb": _mb(steps * num * runs * 8 * 4, base=2 * BASE_MEM_MB),
        "small_runtime_min": _minutes(60),
    }
    res.update({k: v for k, v in defaults.items() if res.get(k) is None})
    return res


