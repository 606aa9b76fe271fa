"""Sampling stage of the closed-form families: denoisers computed from the training set, no training.

- family `empirical`: the exact minimizer of the empirical denoising loss (Baptista et al., arXiv
  2501.15785: the posterior mean under the Gaussian mixture on the n training points) and, with
  `regularization`, its Tikhonov, asymptotic-consistency (normalizer floor) or kernel-smoothed versions
  at `strength` (see ``diffmem.families.empirical`` for the equations).
- family `linear`: the optimal affine denoiser from the training mean and covariance (Halder & Pehlevan,
  ``diffmem.families.linear``).

These models have no optimizer steps: the run has a single checkpoint, recorded as step 0 in the
manifest and the cube (the cube's `closed_form` attribute says so). Samples are drawn with the same
sampler, per-sample noise and settings as the trained families, so cubes are directly comparable, and
cached in the run's folder (runs/<run>/samples/closed_<model key>-<sampling key>/), keyed by the model
slice, the training set and the sampler settings.

Run: `diffmem closed-form-sample --train train.npz --model '<json>' --sample-cfg '<json>'
--run-dir results/<exp>/runs/n64_seed0 --out samples.json`
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from diffmem.config import (
    CLOSED_FORM,
    ConfigError,
    ModelConfig,
    SampleConfig,
    family_model,
    read_json_arg,
    read_slice,
    stable_hash,
    without_quiet_defaults,
)
from diffmem.data import load_train
from diffmem.families.closed_form import closed_form_denoiser
from diffmem.generation import generate, open_sample_cache
from diffmem.io import atomic_write_text, fail
from diffmem.log import configure
from diffmem.stages import add_run_settings, stage_parser

log = logging.getLogger(__name__)
STEP = 0  # the single "checkpoint" of a closed-form model
# bump when what a config means changes (2: the consistency floor is relative to a typical neighbour)
CLOSED_FORM_VERSION = 2


def model_key(model: ModelConfig, train: np.ndarray) -> str:
    """Cache key of a closed-form model: its own config keys and the training set's bytes."""
    digest = hashlib.sha256(np.ascontiguousarray(train).tobytes()).hexdigest()[:16]
    return stable_hash({"model": without_quiet_defaults("model", family_model(dataclasses.asdict(model))), "data": digest, "version": CLOSED_FORM_VERSION})


def sample_closed_form(model: ModelConfig, cfg: SampleConfig, *, train: np.ndarray, run_dir: str | Path,
                       n: int, seed: int, log: Callable[[str], None] = log.info) -> dict:
    """Sample the closed-form model (or reuse cached samples); return the samples.json manifest."""
    cache = open_sample_cache(run_dir, cfg, source=f"closed_{model_key(model, train)}")
    path = cache / f"step{STEP:09d}.npy"
    if path.exists():
        log(f"reused {path}")
    else:
        t0 = time.perf_counter()
        denoiser = closed_form_denoiser(model, train)
        x = generate(denoiser, cfg, data_shape=(int(np.prod(train.shape[1:])),), device=torch.device("cpu"))
        if not np.all(np.isfinite(x)):
            raise FloatingPointError(f"non-finite samples from the {model.family} denoiser "
                                     f"(regularization {model.regularization}, strength {model.strength})")
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, x.astype(np.float32))
        tmp.replace(path)
        log(f"n={n} seed={seed} {model.family}/{model.regularization} strength {model.strength:g}: "
            f"{cfg.num_samples} samples in {time.perf_counter() - t0:.1f} s")
    return {"n": n, "seed": seed, "steps": [STEP], "files": {str(STEP): str(path)}, "sample_config": cfg.__dict__,
            "num_samples": cfg.num_samples, "closed_form": dataclasses.asdict(model)}


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem closed-form-sample", __doc__, "diffmem.stages.closed_form")
    parser.add_argument("--train", required=True, help="training subset .npz")
    parser.add_argument("--model", required=True, help="model config slice (JSON or path)")
    parser.add_argument("--sample-cfg", required=True, help="sample config slice (JSON or path)")
    add_run_settings(parser)
    parser.add_argument("--run-dir", required=True, help="the run's folder (samples are cached in its samples/)")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="samples.json manifest")
    args = parser.parse_args(argv)
    try:
        model = ModelConfig.from_dict(read_json_arg(args.model))
        cfg = SampleConfig.from_dict(read_slice("sample", args.sample_cfg, args.run_settings))  # on the CPU
    except ConfigError as exc:
        fail(str(exc))
    if model.family not in CLOSED_FORM:
        fail(f"diffmem closed-form-sample: family {model.family!r} is trained; use diffmem train and sample")
    torch.set_num_threads(args.threads)
    train, _, _ = load_train(args.train)
    if train.shape[0] != args.n:
        fail(f"diffmem closed-form-sample: {args.train} holds {train.shape[0]} points, expected n = {args.n}")
    try:
        manifest = sample_closed_form(model, cfg, train=train, run_dir=args.run_dir, n=args.n,
                                      seed=args.seed)
    except FloatingPointError as exc:
        fail(str(exc))
    atomic_write_text(args.out, json.dumps(manifest, indent=1))


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
