"""Quality stage: how good are the samples at every checkpoint of one (n, seed) run?

Per checkpoint, against a fixed reference drawn once (the held-out split, or fresh population
samples for synthetic data) with the same sample count at every checkpoint:
- `fd_<space>`, `kid_<space>`: Fréchet distance and kernel inception distance in each configured
  feature space (`data`, `classifier`, `inception`).
- synthetic data with a known density (`gmm`, `gaussian`): `loglik` of the samples under the true
  density (next to `loglik_true` of fresh true samples), `energy_distance` to fresh true samples,
  and, without sampling, `denoiser_err_pop` / `denoiser_err_emp`: the checkpoint's denoiser against
  the population and the empirical optimal denoisers on probe points (the generalization and
  memorization errors of the Gaussian-mixture experiment of arXiv 2505.17638).
- `e_tg`, `e_og`, `delta`: distances between kernel-smoothed densities of the training set, the
  samples and the population (Halder & Pehlevan's E_TG / E_OG).

With `quality.baselines`, once per run (no step axis), the FD against the same reference of two sets of
as many points as the samples, in each feature space (`baseline_fds`): `fd_<space>_heldout`, held-out
data (the FD of a generator of the data distribution, up to the finite-sample bias every FD here has),
and `fd_<space>_train`, the training set drawn with replacement (a perfect memorizer's FD).

Several runs in one process (the workflow's grouped evaluation, `train.group_evaluation`): give
--samples, --train-metrics, --checkpoints, --train and --out one entry per run; each run is evaluated as alone.

Run: `diffmem quality --samples samples.json --train-metrics train_metrics.nc --train train.npz
--dataset dataset.npz --data-cfg '<json>' --quality-cfg '<json>' [--classifier classifier.pt] --out quality.nc`
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from diffmem import names
from diffmem.checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from diffmem.config import ConfigError, DataConfig, ModelConfig, QualityConfig, read_json_arg, stable_hash
from diffmem.data import load_dataset, load_train
from diffmem.families.closed_form import closed_form_denoiser
from diffmem.generation import denoiser_from_checkpoint
from diffmem.heap import keep_freed_memory
from diffmem.io import NETCDF_ENGINE, atomic_to_netcdf, atomic_write_text, fail, file_digest
from diffmem.log import configure
from diffmem.metrics import distances, exact, features, kde
from diffmem.stages import one_per_run, stage_parser

QUALITY_VERSION = 2
log = logging.getLogger(__name__)


def true_distribution(data: DataConfig):
    """The exact density of synthetic data, or None."""
    if data.dataset == "gaussian":
        return exact.IsotropicGaussian(dim=data.dim)
    if data.dataset == "gmm":
        return exact.SymmetricGMM(dim=data.dim, mu=data.gmm_mu)
    return None


class Featurizer:
    """Maps data [N, D] to features per space; the classifier / Inception networks load once."""

    def __init__(self, spaces, *, image_shape, classifier_path=None, inception_weights=None, inception_sha256=None):
        self.spaces = list(spaces)
        self.image_shape = image_shape
        self.models = {}
        if "classifier" in self.spaces:
            self.models["classifier"] = features.load_classifier(classifier_path)
        if "inception" in self.spaces:
            try:
                self.models["inception"] = features.load_inception(inception_weights, sha256=inception_sha256)
            except (FileNotFoundError, ValueError) as exc:
                fail(str(exc))

    def __call__(self, space: str, x: np.ndarray) -> np.ndarray:
        if space != "data" and self.image_shape is not None:
            x = x.reshape(x.shape[0], *self.image_shape)
        return features.extract_features(space, x, model=self.models.get(space))


def reference_set(ds, truth, cfg: QualityConfig, rng: np.random.Generator) -> np.ndarray:
    if truth is not None:
        return truth.sample(cfg.num_reference, rng).astype(np.float32)
    take = min(cfg.num_reference, ds.test.shape[0])
    return ds.test[rng.permutation(ds.test.shape[0])[:take]]


def baseline_fds(*, train: np.ndarray, heldout: np.ndarray, num: int, ref_feats: dict, featurize: Featurizer,
                 rng: np.random.Generator) -> dict[str, float]:
    """FD against the reference of `num` held-out points (all of them when fewer) and of `num` draws with
    replacement from the training set, in each feature space: {fd_<space>_heldout, fd_<space>_train}."""
    held = heldout[rng.permutation(heldout.shape[0])[:num]]
    copies = train[rng.integers(0, train.shape[0], size=num)]
    out = {}
    for space in featurize.spaces:
        out[names.FD_HELDOUT.format(space=space)] = distances.frechet_distance(featurize(space, held), ref_feats[space])
        out[names.FD_TRAIN.format(space=space)] = distances.frechet_distance(featurize(space, copies), ref_feats[space])
    return out


def heldout_points(ds, truth, *, train_indices: np.ndarray | None, num: int, rng: np.random.Generator) -> np.ndarray:
    """Data apart from the reference and from the run's training set: fresh true samples (synthetic data)
    or the pool points outside the training set (the test split is the reference's)."""
    if truth is not None:
        return truth.sample(num, rng).astype(np.float32)
    if train_indices is None:
        raise ValueError("quality.baselines on a data set needs the run's training indices")
    keep = np.ones(ds.pool.shape[0], dtype=bool)
    keep[np.asarray(train_indices, dtype=np.int64)] = False
    return ds.pool[keep]


def quality_of_step(samples: np.ndarray, *, train: np.ndarray, reference: np.ndarray, ref_feats: dict,
                    ref_moments: dict, featurize: Featurizer, truth, population: np.ndarray | None, denoiser,
                    cfg: QualityConfig, rng: np.random.Generator) -> dict[str, object]:
    """All quality numbers of one checkpoint's samples (scalars, or arrays over probe_sigma); `ref_moments` holds
    `distances.gaussian_moments` of each space's reference features."""
    out: dict[str, object] = {}
    finite = np.all(np.isfinite(samples), axis=1)
    x = samples[finite]
    for space in featurize.spaces:
        feats = featurize(space, x)
        out[names.FD.format(space=space)] = distances.frechet_distance(feats, ref_feats[space],
                                                                      moments_b=ref_moments[space])
        kid, kid_se = distances.kernel_inception_distance(
            feats, ref_feats[space], num_subsets=cfg.kid_num_subsets,
            subset_size=min(cfg.kid_subset_size, feats.shape[0], ref_feats[space].shape[0]), rng=rng)
        out[names.KID.format(space=space)] = kid
    if truth is not None and cfg.exact:
        out[names.LOGLIK] = exact.mean_loglik(x, truth)
        out[names.ENERGY] = distances.energy_distance(x, reference)
        if denoiser is not None:
            errs = exact.denoiser_errors(denoiser, train=train, true_dist=truth, sigmas=list(cfg.denoiser_sigmas),
                                         num_probe=cfg.num_probe, rng=np.random.default_rng(cfg.seed))
            out[names.DENOISER_ERR_POP] = np.asarray(errs["pop"], dtype=float)
            out[names.DENOISER_ERR_EMP] = np.asarray(errs["emp"], dtype=float)
    if cfg.e_tg:
        target = truth if (cfg.population == "exact" and truth is not None) else population
        res = kde.e_tg_e_og(train, x, target, bandwidth_rule=cfg.bandwidth, divergence=cfg.divergence,
                            num_mc=cfg.num_mc, rng=rng)
        out[names.E_TG], out[names.E_OG] = res["e_tg"], res["e_og"]
        out[names.E_TG + "_se"], out[names.E_OG + "_se"] = res["e_tg_se"], res["e_og_se"]
        out[names.DELTA] = res["e_tg"] - res["e_og"]
    return out


def quality_run(manifest: dict, *, state_dir: Path | None, train: np.ndarray, ds, data: DataConfig, cfg: QualityConfig,
                classifier_path: str | None, log: Callable[[str], None] = log.info,
                train_indices: np.ndarray | None = None) -> xr.Dataset:
    rng = np.random.default_rng([cfg.seed, 17])
    truth = true_distribution(data)
    featurize = Featurizer(cfg.feature_spaces, image_shape=ds.image_shape, classifier_path=classifier_path,
                           inception_weights=cfg.inception_weights, inception_sha256=cfg.inception_sha256)
    reference = reference_set(ds, truth, cfg, rng)
    ref_feats = {space: featurize(space, reference) for space in featurize.spaces}
    ref_moments = {space: distances.gaussian_moments(feats) for space, feats in ref_feats.items()}  # once per run
    population = None
    if cfg.e_tg:
        population = truth.sample(cfg.num_population, rng).astype(np.float32) if truth is not None else ds.test
    steps = [int(s) for s in manifest["steps"]]
    # per-checkpoint results are cached beside the samples, keyed by everything they depend on, so a
    # raised max_steps only evaluates the new checkpoints
    # (baselines are per run, not per checkpoint: not in the key, which stays what it was before the key existed)
    per_step = {k: v for k, v in cfg.__dict__.items() if k != "baselines"}
    key = stable_hash({"quality": per_step, "data": data.__dict__, "version": QUALITY_VERSION,
                       "classifier": file_digest(classifier_path) if "classifier" in cfg.feature_spaces else None,
                       "inception": file_digest(cfg.inception_weights) if "inception" in cfg.feature_spaces else None})
    rows, t0, cached = [], time.perf_counter(), 0
    for step in steps:
        sample_file = Path(manifest["files"][str(step)])
        cache = sample_file.with_name(f"{sample_file.stem}.quality_{key}.json")
        if cache.exists():
            rows.append({k: np.asarray(v) for k, v in json.loads(cache.read_text()).items()})
            cached += 1
            continue
        samples = np.load(sample_file)
        denoiser = None
        if truth is not None and cfg.exact and "closed_form" in manifest:
            denoiser = closed_form_denoiser(ModelConfig.from_dict(manifest["closed_form"]), train)
        elif truth is not None and cfg.exact:
            try:
                ckpt = load_checkpoint(checkpoint_path(state_dir, step))
            except CheckpointError as exc:
                fail(str(exc))
            denoiser = denoiser_from_checkpoint(ckpt, use_ema=True, device=torch.device("cpu"))
        rows.append(quality_of_step(samples, train=train, reference=reference, ref_feats=ref_feats,
                                    ref_moments=ref_moments, featurize=featurize, truth=truth, population=population,
                                    denoiser=denoiser, cfg=cfg, rng=np.random.default_rng([cfg.seed, step])))
        atomic_write_text(cache, json.dumps({k: np.asarray(v).tolist() for k, v in rows[-1].items()}))
        log(f"step {step}: " + "  ".join(f"{k} {float(v):.4g}" for k, v in rows[-1].items() if np.ndim(v) == 0))
    log(f"{len(steps) - cached} checkpoints evaluated, {cached} cached "
        f"({time.perf_counter() - t0:.1f} s)")
    variables = {}
    for key in rows[0]:
        values = np.stack([np.asarray(r[key], dtype=float) for r in rows])
        dims = (names.STEP,) if values.ndim == 1 else (names.STEP, names.PROBE_SIGMA)
        variables[key] = (dims, values)
    coords = {names.STEP: np.array(steps, dtype=np.int64), names.N: int(manifest["n"]),
              names.SEED: int(manifest["seed"])}
    if names.DENOISER_ERR_POP in variables:
        coords[names.PROBE_SIGMA] = np.array(cfg.denoiser_sigmas, dtype=float)
    out = xr.Dataset(variables, coords=coords)
    if truth is not None and cfg.exact:
        out[names.LOGLIK_TRUE] = exact.mean_loglik(truth.sample(cfg.num_reference, rng), truth)
    if cfg.baselines:
        num = int(manifest["num_samples"])
        base_rng = np.random.default_rng([cfg.seed, 23])  # apart from `rng`: the other numbers do not move
        heldout = heldout_points(ds, truth, train_indices=train_indices, num=num, rng=base_rng)
        for var, value in baseline_fds(train=train, heldout=heldout, num=num, ref_feats=ref_feats,
                                       featurize=featurize, rng=base_rng).items():
            out[var] = value
            held = var.endswith("_heldout")
            out[var].attrs.update({
                "long_name": (f"Fréchet distance of {min(num, heldout.shape[0])} held-out points" if held else
                              f"Fréchet distance of {num} draws with replacement from the training set")
                             + " against the reference (a per-run baseline)",
                "units": "1", "num_points": int(min(num, heldout.shape[0]) if held else num),
                "num_reference": int(reference.shape[0])})
        log("baselines: " + "  ".join(f"{k} {float(out[k]):.4g}" for k in out.data_vars
                                      if k.endswith(("_heldout", "_train"))))
    for space in featurize.spaces:
        for template in (names.FD, names.KID):
            var = template.format(space=space)
            out[var].attrs.update({
                "long_name": f"{'Fréchet distance' if template == names.FD else 'kernel inception distance'} "
                             f"in the {space} feature space, samples vs reference",
                "units": "1", "num_samples": int(manifest["num_samples"]),
                "num_reference": int(reference.shape[0]),
            })
    for var in (names.E_TG, names.E_OG):
        if var in out:
            out[var].attrs.update({"divergence": cfg.divergence, "bandwidth_rule": str(cfg.bandwidth),
                                   "num_mc": cfg.num_mc, "population": cfg.population})
            out[var + "_se"].attrs.update({"long_name": f"Monte Carlo standard error of {var}", "units": "1"})
    return names.annotate(out)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem quality", __doc__, "diffmem.stages.quality")
    parser.add_argument("--samples", nargs="+", required=True,
                        help="samples.json manifest (several: one per run, evaluated one after another)")
    parser.add_argument("--train-metrics", nargs="+", default=None,
                        help="train_metrics.nc of each run (locates the checkpoints; not for closed-form families)")
    parser.add_argument("--train", nargs="+", required=True, help="training subset .npz of each run")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-cfg", required=True)
    parser.add_argument("--quality-cfg", required=True)
    parser.add_argument("--classifier", default=None, help="classifier.pt (for the classifier feature space)")
    parser.add_argument("--checkpoints", nargs="+", default=None,
                        help="each run's checkpoint folder, for the denoiser errors (default: the one train_metrics.nc names)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", nargs="+", required=True, help="quality.nc of each run")
    args = parser.parse_args(argv)
    runs = one_per_run("diffmem quality", samples=args.samples, train_metrics=args.train_metrics, train=args.train,
                       checkpoints=args.checkpoints, out=args.out)
    try:
        data = DataConfig.from_dict(read_json_arg(args.data_cfg))
        cfg = QualityConfig.from_dict(read_json_arg(args.quality_cfg))
    except ConfigError as exc:
        fail(str(exc))
    keep_freed_memory()  # the network's activations reuse the heap instead of faulting pages in anew
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    train_metrics = args.train_metrics or [None] * runs
    checkpoints = args.checkpoints or [None] * runs
    for samples, metrics, folder, train_file, out in zip(args.samples, train_metrics, checkpoints, args.train, args.out):
        manifest = json.loads(Path(samples).read_text())
        manifest.setdefault("num_samples", manifest.get("sample_config", {}).get("num_samples", 0))
        state_dir = None
        if metrics is not None:
            with xr.open_dataset(metrics, engine=NETCDF_ENGINE) as tm:
                state_dir = Path(folder or tm.attrs["checkpoint_dir"])
        elif "closed_form" not in manifest:
            fail("diffmem quality: --train-metrics is needed to find the checkpoints of a trained model")
        train, train_indices, _ = load_train(train_file)
        label = f"n={manifest['n']} seed={manifest['seed']}"
        result = quality_run(manifest, state_dir=state_dir, train=train, ds=ds, data=data, cfg=cfg,
                             classifier_path=args.classifier, train_indices=train_indices,
                             log=lambda line, label=label: log.info(f"{label}: {line}"))
        atomic_to_netcdf(result, out)


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
