"""The training stage: train one (n, seed) run, or a group of runs, with the engine of `diffmem.engine`.

Each run trains in `<checkpoints>.partial/` and, once its grid is complete, its checkpoints move to
`<checkpoints>/` (the job's declared output; what stays there is `train.keep`'s choice, see
diffmem.checkpoint); its probe losses on the checkpoint grid go to train_metrics.nc. A run whose
`<checkpoints>/` holds the same trajectory continues from it (a raised max_steps resumes). A job
stopped by SIGTERM / SIGUSR1 saves `resume.pt`, writes no metrics and exits with 128 + the signal number.

Run: `diffmem train --train a.npz [b.npz ...] --seed 0 [1 ...] --dataset dataset.npz --model '<json>'
--train-cfg '<json>' [--run-settings '<json>'] --checkpoints results/exp/runs/n64_seed0/checkpoints [...]
--out .../train_metrics.nc [...]` (one --train, --seed, --checkpoints and --out per run).
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import torch
import xarray as xr

from diffmem import names
from diffmem.checkpoint import CheckpointError, adopt_checkpoints, publish_checkpoints
from diffmem.config import ConfigError, ModelConfig, TrainConfig, read_json_arg, read_slice
from diffmem.data import load_dataset, load_train
from diffmem.engine import KernelRefused, Run, TrainingDiverged, TrainingInterrupted, set_tf32, train_runs, trajectory_hash
from diffmem.gpus import select_device
from diffmem.io import atomic_to_netcdf, fail
from diffmem.log import configure
from diffmem.stages import add_run_settings, one_per_run, stage_parser

log = logging.getLogger(__name__)



def metrics_dataset(metrics: dict[int, dict[str, float]], *, n: int, seed: int, attrs: dict) -> xr.Dataset:
    steps = sorted(metrics)
    ds = xr.Dataset(
        {key: ((names.STEP,), np.array([metrics[s][key] for s in steps])) for key in (names.TRAIN_LOSS, names.TEST_LOSS)},
        coords={names.STEP: np.array(steps, dtype=np.int64), names.N: n, names.SEED: seed},
        attrs=attrs,
    )
    return names.annotate(ds)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem train", __doc__, "diffmem.stages.train")
    parser.add_argument("--train", nargs="+", required=True, help="training subsets (.npz from `diffmem subsample`), one per run")
    parser.add_argument("--dataset", required=True, help="dataset (.npz from `diffmem prepare-data`) for the test probe")
    parser.add_argument("--model", required=True, help="model config slice (JSON or path)")
    parser.add_argument("--train-cfg", required=True, help="train config slice (JSON or path)")
    add_run_settings(parser)
    parser.add_argument("--seed", "--seeds", dest="seed", nargs="+", type=int, required=True, help="seed of each run")
    parser.add_argument("--checkpoints", nargs="+", required=True,
                        help="checkpoint folder of each run (runs/<run>/checkpoints; it trains in <folder>.partial)")
    parser.add_argument("--out", "--outs", dest="out", nargs="+", required=True, help="train_metrics.nc of each run")
    args = parser.parse_args(argv)
    one_per_run("diffmem train", train=args.train, seed=args.seed, checkpoints=args.checkpoints, out=args.out)
    try:
        model_cfg = ModelConfig.from_dict(read_json_arg(args.model))
        train_cfg = TrainConfig.from_dict(read_slice("train", args.train_cfg, args.run_settings))
    except ConfigError as exc:
        fail(str(exc))
    if model_cfg.family != "network":
        fail(f"diffmem train: model.family {model_cfg.family!r} is not trained by this stage "
             "(empirical / linear: diffmem closed-form-sample; random_features: diffmem rf-train)")
    log.debug(f"{model_cfg}; {train_cfg}")
    torch.set_num_threads(train_cfg.threads)
    set_tf32(train_cfg.tf32)
    try:
        device, _gpu_lease = select_device(train_cfg.device)  # the lease holds this job's GPU until exit
    except RuntimeError as exc:
        fail(str(exc))
    test = load_dataset(args.dataset).test
    runs, digests, shapes = [], [], set()
    for path, seed, folder in zip(args.train, args.seed, args.checkpoints):
        x_train, _, shape = load_train(path)
        shapes.add(tuple(shape) if (shape and model_cfg.arch == "unet") else (x_train.shape[1],))
        digest = trajectory_hash(model_cfg, train_cfg, x_train=x_train, seed=seed)
        work = adopt_checkpoints(folder, digest, log=lambda line, n=x_train.shape[0], seed=seed: log.info(f"n={n} seed={seed}: {line}"))
        runs.append(Run(x_train, seed, work))
        digests.append(digest)
    if len(shapes) != 1:
        fail(f"diffmem train: the runs of one job need one data shape, got {sorted(shapes)}")
    for run in runs:
        log.info(f"{run.label} device={device} state={run.state_dir}")
    try:
        metrics = train_runs(runs, test, model_cfg=model_cfg, train_cfg=train_cfg, data_shape=shapes.pop(),
                             device=device)
    except (TrainingDiverged, CheckpointError, KernelRefused) as exc:
        fail(str(exc))
    except TrainingInterrupted as exc:
        fail(str(exc), code=128 + exc.signum)  # the shell's convention for "killed by this signal"
    for run, digest, run_metrics, out, folder in zip(runs, digests, metrics, args.out, args.checkpoints):
        publish_checkpoints(folder, log=lambda line, label=run.label: log.info(f"{label}: {line}"))
        ds = metrics_dataset(run_metrics, n=run.x_train.shape[0], seed=run.seed,
                             attrs={"checkpoint_dir": str(folder), "trajectory_hash": digest})
        atomic_to_netcdf(ds, out)
        log.info(f"wrote {out}")


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
