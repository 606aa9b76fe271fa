"""The random-features (RF) stage: train the RF score model per (n, seed), fit its split time, plot.

The model, its gradient descent and the theory live in `diffmem.families.random_features` (Bonnaire et
al., arXiv 2505.17638, Sect. 3: s_A(x) = A tanh(W x / sqrt(d)) / sqrt(p) trained at one diffusion time t
on N(0, I_d) data).  This module is the workflow around it:

- `rf_run`: one training run on one training set (n, seed), recorded on the train config's log-spaced
  checkpoint grid, in steps and in the paper's time tau = step lr / d^2.  Solver `gd` runs full-batch
  gradient descent with the noise redrawn every step; `flow` evaluates the exact gradient flow, Eq. (10),
  of the noise-averaged loss (U, V averaged over model.rf_num_noise draws per point) at the same taus.
  Both also record the losses at A restricted to U's top-n eigenvectors (the theory's memorization bulk)
  and to the other p - n modes (issue 22: which modes carry the train-test gap).
- `rf_fit`: the split time tau_split per (n, seed) -- by default (fit.rf_split: half_gap) the time at which
  the train-test gap reaches half its long-time value, with no threshold on the gap's size; `threshold`
  keeps the old first tau where (test - train) / test loss > fit.rf_gap, which is biased because the
  long-time gap itself shrinks like 1 / psi_n -- its power law in n with a bootstrap-over-seeds CI, a generalization time tau_gen from the
  score error, and the theory tau_mem = psi_p / (Delta_t lam_min) per n (paper's convention, see
  `theory_tau_mem`).  From cubes with the mode split, tau_split_bulk and tau_split_outside read the gap of
  each part the same way, with their power laws.  The paper's effect: tau_split grows ~ linearly with psi_n = n / d at fixed
  psi_p = p / d, tau_gen does not.
- `make_rf_figures`: rf_losses.png and rf_split_time.png.

Run:
    diffmem rf-train --train train.npz --dataset dataset.npz --model '<json>' --train-cfg '<json>' \\
        --seed 0 --out rf_metrics.nc
    diffmem rf-fit --cube cube.nc --model '<json>' --fit-cfg '<json>' --out rf_fit.nc
    diffmem rf-plot --cube cube.nc --fit rf_fit.nc --outdir figures/ [--title T]
    diffmem rf-compare --fits a/fit.nc b/fit.nc --cubes a/cube.nc b/cube.nc --labels a b --out rf_compare.png
(equivalently `python -m diffmem.stages.rf train|fit|plot ...`).  cube.nc is `diffmem.cube.combine_runs` of
the rf_metrics.nc files.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import xarray as xr

from diffmem import names
from diffmem.config import (
    ConfigError,
    FitConfig,
    ModelConfig,
    TrainConfig,
    checkpoint_grid,
    read_json_arg,
    read_slice,
    split_run_settings,
    stable_hash,
)
from diffmem.cube import data_dim, load_parts
from diffmem.data import load_dataset, load_train
from diffmem.families.random_features import (
    delta,
    gap_level_time,
    half_gap_time,
    rf_features,
    rf_gradient_flow,
    split_time,
    theory_tau_mem,
    train_random_features,
)
from diffmem.figures.rf import make_rf_figures
from diffmem.figures.rf_compare import make_rf_compare
from diffmem.io import atomic_to_netcdf, carried_provenance, fail, provenance
from diffmem.log import configure
from diffmem.onsets import describe_scaling, quality_onset, scaling_fit
from diffmem.scaling import power_law_fit
from diffmem.stages import add_run_settings, stage_parser

__all__ = ["GAP_LEVELS", "RFDivergedError", "gd_lr_bound", "main", "make_rf_figures", "rf_fit", "rf_run", "top_edge"]

logger = logging.getLogger(__name__)  # `log` is the progress callback of the functions below
SOLVERS = ("gd", "flow")
# the gaps of A's parts by modes of U (rf_run records their losses; rf_fit reads each one's split time)
# part: (split time, train loss, test loss), the parts of MODE_PARTS
MODE_SPLITS = {"bulk": (names.TAU_SPLIT_BULK, names.TRAIN_LOSS_BULK, names.TEST_LOSS_BULK),
               "outside": (names.TAU_SPLIT_OUTSIDE, names.TRAIN_LOSS_OUTSIDE, names.TEST_LOSS_OUTSIDE)}
# the fractions of the final train-test gap at which rf_fit also reads the split time (tau_split_levels):
# the low levels read the fast part of the gap's rise, the high ones its slowest modes
GAP_LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)

def _part_attrs(where: str, part: str) -> dict[str, str]:
    return {"long_name": f"RF score loss on the {where} (Eq. (8), fixed evaluation noise) of A restricted to {part}; "
                         "U the matrix the training follows on average (noise-averaged, or the frozen draws' for the "
                         "flow with rf_num_noise > 0)", "units": "1"}


RUN_ATTRS = {
    names.TAU: {"long_name": "gradient-descent time tau = step lr / d^2 (arXiv 2505.17638 Eq. (9))", "units": "1"},
    names.DIM: {"long_name": "data dimension d", "units": "1"},
    names.TRAIN_LOSS: {"long_name": "RF score loss on the training set (Eq. (8), fixed evaluation noise)", "units": "1"},
    names.TEST_LOSS: {"long_name": "RF score loss on the held-out test split (Eq. (8), fixed evaluation noise)", "units": "1"},
    names.SCORE_ERROR: {"long_name": "(1/d) E||s_A(x_t) - s(x_t)||^2 on the test split, s(x) = -x", "units": "1"},
    names.TRAIN_LOSS_BULK: _part_attrs("training set", "A Q Q^T: the span of U's top n eigenvectors Q (the theory's "
                                                        "memorization bulk)"),
    names.TEST_LOSS_BULK: _part_attrs("held-out test split", "A Q Q^T: the span of U's top n eigenvectors Q (the "
                                                             "theory's memorization bulk)"),
    names.TRAIN_LOSS_OUTSIDE: _part_attrs("training set", "A - A Q Q^T: the complement of that span (U's other p - n "
                                                           "eigenvectors)"),
    names.TEST_LOSS_OUTSIDE: _part_attrs("held-out test split", "A - A Q Q^T: the complement of that span (U's other "
                                                                "p - n eigenvectors)"),
    names.U_EIGENVALUE: {"long_name": "eigenvalues of U (Eq. (11), noise-averaged with rf_num_noise 0; without the "
                                      "ridge), ascending; the mode lam relaxes on psi_p / (2 Delta_t (lam + ridge))",
                         "units": "1"},
}

# streams of the run seed, independent of the subset's (data.subset_indices): W and the training noise;
# the noise of the stability-bound estimate
_RF_STREAM = 0x52F
_BOUND_STREAM = 0x52F + 1


class RFDivergedError(RuntimeError):
    """Gradient descent produced a non-finite loss (the learning rate is too large)."""


def _generator(seed: int, stream: int = _RF_STREAM) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def gd_lr_bound(train_x: torch.Tensor, w: torch.Tensor, *, t: float, num_noise: int,
                generator: torch.Generator, ridge: float = 0.0) -> float:
    """Largest stable GD learning rate, p d / (Delta_t (lam_max(U) + ridge)), for the loss at one noise draw.

    The loss is quadratic in A with Hessian 2 Delta_t U / (p d) (Eq. (10), U of Eq. (11)), so gradient
    descent diverges when lr > 2 / lam_max(Hessian).  With the noise redrawn every step this holds for
    the mean dynamics; lam_max is estimated from `num_noise` draws per point (a cheap p x p or nm x nm
    eigenproblem).  train_x [n, d], w [p, d].
    """
    p, d = w.shape
    xs = train_x.repeat(num_noise, 1)  # [n m, d]
    xi = torch.randn(xs.shape, generator=generator, dtype=xs.dtype)
    phi = rf_features(w, math.exp(-t) * xs + math.sqrt(delta(t)) * xi)  # [n m, p]
    gram = phi @ phi.T if phi.shape[0] <= p else phi.T @ phi  # same nonzero spectrum as n m U
    lam_max = float(torch.linalg.eigvalsh(gram)[-1]) / phi.shape[0]
    return p * d / (delta(t) * (lam_max + ridge))


class _Progress:
    """Progress lines for long runs (at most one per `every_s` seconds) and a stop on a non-finite loss."""

    def __init__(self, *, label: str, num_steps: int, lr: float, d: int, log: Callable[[str], None],
                 every_s: float = 10.0):
        self.label, self.num_steps, self.lr, self.d, self.log, self.every_s = label, num_steps, lr, d, log, every_s
        self.start = self.last = time.monotonic()

    def __call__(self, step: int, losses: dict[str, float]) -> None:
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            raise RFDivergedError(
                f"random-features gradient descent diverged ({self.label}): non-finite {bad[0]} at step {step} "
                f"(tau = {step * self.lr / self.d**2:.4g}) with train.lr = {self.lr:g}; use a smaller train.lr")
        now = time.monotonic()
        if now - self.last >= self.every_s or step == self.num_steps:
            self.last = now
            self.log(f"{self.label} step {step}/{self.num_steps} train {losses['train_loss']:.4f} "
                     f"test {losses['test_loss']:.4f} score error {losses['score_error']:.4f} "
                     f"({now - self.start:.0f} s)")


def rf_run(train_x: np.ndarray, test_x: np.ndarray, *, model: ModelConfig, train: TrainConfig, seed: int,
           log: Callable[[str], None] = logger.info) -> xr.Dataset:
    """One RF training run on train_x [n, d], evaluated on test_x [n_test, d]; dims (step,).

    p = round(psi_p d); W and the training noise come from `seed` alone (not n).  Raises
    `RFDivergedError` on a non-finite loss and `ConfigError` on an unknown solver.
    """
    if model.rf_solver not in SOLVERS:
        raise ConfigError(f"config error at 'model.rf_solver': {model.rf_solver!r} is not one of {SOLVERS}")
    x = torch.as_tensor(np.asarray(train_x), dtype=torch.float64)  # [n, d]
    x_test = torch.as_tensor(np.asarray(test_x), dtype=torch.float64)  # [n_test, d]
    n, d = x.shape
    p = max(1, round(model.psi_p * d))
    t, lr = float(model.rf_time), float(train.lr)
    steps = np.asarray(checkpoint_grid(dataclasses.asdict(train)), dtype=np.int64)
    tau = steps * lr / d**2
    label = f"n={n} seed={seed}"

    # W is the first draw of the run's generator (train_random_features / rf_gradient_flow), so the bound
    # is computed for the run's own features; its noise comes from a separate generator.
    w = torch.randn(p, d, generator=_generator(seed), dtype=torch.float64)
    lr_bound = float("nan")  # the flow has no step size; the bound costs a p x p eigenproblem
    if model.rf_solver == "gd":
        lr_bound = gd_lr_bound(x, w, t=t, num_noise=model.rf_num_noise, generator=_generator(seed, _BOUND_STREAM),
                               ridge=model.rf_ridge)
    eval_noise = eval_draws(n)
    log(f"{label}: d={d} p={p} t={t:g} solver={model.rf_solver} lr={lr:g} (GD bound ~{lr_bound:.3g}) "
        f"{int(steps[-1])} steps, tau up to {tau[-1]:.4g}, ridge {model.rf_ridge:g}; noise draws per point: {model.rf_num_noise} "
        f"(training), {eval_noise} (evaluation)")
    if model.rf_solver == "gd" and lr > lr_bound:
        logger.warning(
            f"{label}: lr {lr:g} is above the GD stability bound ~{lr_bound:.3g}; expect divergence")
    t0 = time.monotonic()

    if model.rf_solver == "gd":
        res = train_random_features(
            x, x_test, p=p, t=t, lr=lr, num_steps=int(steps[-1]), generator=_generator(seed),
            num_noise=model.rf_num_noise, resample_noise=True, record_steps=steps, num_eval_noise=eval_noise,
            ridge=model.rf_ridge, bulk_size=n, progress=_Progress(label=label, num_steps=int(steps[-1]), lr=lr, d=d, log=log),
        )
        if not np.array_equal(res["step"], steps):
            raise RuntimeError(f"recorded steps {res['step']} differ from the checkpoint grid {steps}")
    else:
        res = rf_gradient_flow(x, x_test, p=p, t=t, taus=tau, generator=_generator(seed),
                               num_noise=model.rf_num_noise, num_eval_noise=eval_noise, ridge=model.rf_ridge,
                               bulk_size=n,
                               log=lambda m: log(f"{label}: {m} ({time.monotonic() - t0:.0f} s)"))
        for key in (names.TRAIN_LOSS, names.TEST_LOSS, names.SCORE_ERROR):
            bad = np.flatnonzero(~np.isfinite(res[key]))
            if bad.size:
                raise RFDivergedError(f"random-features gradient flow ({label}): non-finite {key} at step "
                                      f"{int(steps[bad[0]])}")
    recorded = (names.TRAIN_LOSS, names.TEST_LOSS, names.SCORE_ERROR, *[k for keys in MODE_SPLITS.values() for k in keys[1:]])
    ds = xr.Dataset(
        {key: ((names.STEP,), np.asarray(res[key], dtype=np.float64)) for key in recorded if key in res},
        coords={names.STEP: steps, names.TAU: ((names.STEP,), tau), names.N: n, names.SEED: int(seed), names.DIM: d},
        attrs={"d": d, "p": p, "psi_p": p / d, "psi_n": n / d, "rf_time": t, "lr": lr, "solver": model.rf_solver,
               "rf_num_noise": model.rf_num_noise, "rf_ridge": float(model.rf_ridge), "lr_stability_bound": lr_bound,
               "num_eval_noise": eval_noise,
               "lr_above_stability_bound": int(lr > lr_bound)},
    )
    if "eigvals" in res:  # the flow's U spectrum (without the ridge): the memorization modes' timescales
        ds[names.U_EIGENVALUE] = ((names.RF_MODE,), np.asarray(res["eigvals"], dtype=np.float64))
    names.annotate(ds)
    for key, attrs in RUN_ATTRS.items():  # ours win over the generic denoising-loss names
        if key in ds:
            ds[key].attrs.update(attrs)
    final = {k: float(ds[k][-1]) for k in (names.TRAIN_LOSS, names.TEST_LOSS)}
    log(f"{label}: final train {final[names.TRAIN_LOSS]:.4f} test {final[names.TEST_LOSS]:.4f} "
        f"({time.monotonic() - t0:.0f} s)")
    return ds


def eval_draws(n: int, *, rows: int = 4096) -> int:
    """Evaluation noise draws per point: 16, fewer for large n so the cached features stay ~rows x p."""
    return max(1, min(16, -(-rows // max(n, 1))))


def _split_tau(train_loss: np.ndarray, test_loss: np.ndarray, tau: np.ndarray, *, rel_gap: float,
               method: str = "half_gap") -> float:
    # at tau = 0 (A = 0) nothing is learned yet: a gap there is evaluation noise, not a split
    ok = np.isfinite(train_loss) & np.isfinite(test_loss) & (tau > 0)
    if method == "half_gap":
        s = half_gap_time(train_loss[ok], test_loss[ok], tau[ok])
    elif method == "threshold":
        s = split_time(train_loss[ok], test_loss[ok], tau[ok], rel_gap=rel_gap)
    else:
        raise ConfigError(f"config error at 'fit.rf_split': {method!r} is not one of ('half_gap', 'threshold')")
    return float("nan") if s is None else float(s)


def _level_tau(train_loss: np.ndarray, test_loss: np.ndarray, tau: np.ndarray, level: float) -> float:
    ok = np.isfinite(train_loss) & np.isfinite(test_loss) & (tau > 0)
    s = gap_level_time(train_loss[ok], test_loss[ok], tau[ok], level=float(level))
    return float("nan") if s is None else float(s)


def _per_run(da: xr.DataArray, *extra: str) -> xr.DataArray:
    """da without the coordinates a reduction over step left on it (tau, dim, ...): only n, seed and `extra`."""
    return da.drop_vars([c for c in da.coords if c not in (names.N, names.SEED, *extra)])


def _final_gap(train: xr.DataArray, test: xr.DataArray) -> xr.DataArray:
    return _per_run((test - train).isel({names.STEP: -1}))


def top_edge(eigvals: np.ndarray, n: int) -> float:
    """The smallest of the n largest eigenvalues (all of them when n >= their number): where the theory's
    memorization bulk of n eigenvalues (psi_n < psi_p) has its lower edge lam_min.  NaN when none is finite."""
    lam = np.sort(np.asarray(eigvals, float)[np.isfinite(eigvals)])
    if lam.size == 0:
        return float("nan")
    return float(lam[max(lam.size - n, 0)])


def rf_fit(cube: xr.Dataset, *, model: ModelConfig, fit: FitConfig, rng: np.random.Generator) -> xr.Dataset:
    """Split and generalization times per (n, seed), their power laws in n, and the theory per n.

    cube: `combine_runs` of `rf_run` outputs, dims (n, seed, step) with the `tau` coordinate on step.
    tau_split is the first recorded tau > 0 with (test - train) / test loss > fit.rf_gap (NaN and censored
    when the gap never opens); tau_gen the first tau at which the score error has closed all but
    fit.tau_gen_tolerance of the gap between its first and best value (log-interpolated).  Censored runs
    are left out of the fits.  tau_split_levels reads the same gap at each of GAP_LEVELS (the exponent per
    level shows which part of the gap's rise grows with n); for flow runs, tau_mem_edge puts the run's own
    edge of U's top n eigenvalues into the theory's psi_p / (Delta_t (lam + ridge)).  Where the cube has the
    mode split (rf_run since issue 22), tau_split_bulk and tau_split_outside read the gap of A restricted to
    U's top n eigenvectors and to the rest with the same readout, and gap_final(_bulk, _outside) keep the gaps
    at the last checkpoint.
    """
    d = data_dim(cube)
    p = max(1, round(model.psi_p * d))
    psi_p = p / d
    steps = cube[names.STEP].values
    tau = cube[names.TAU].values if names.TAU in cube.coords else None
    if tau is None:
        raise ConfigError("the cube has no 'tau' coordinate on step (written by rf_run)")
    tau_per_step = float(tau[-1] / steps[-1])  # tau = step lr / d^2, linear in step
    # the half-gap time needs the gap to have settled: compare it a decade before the last checkpoint
    early = int(np.searchsorted(tau, tau[-1] / 10.0))

    def split_times(train: xr.DataArray, test: xr.DataArray) -> xr.DataArray:
        return xr.apply_ufunc(
            lambda tr, te: _split_tau(tr, te, tau, rel_gap=fit.rf_gap, method=fit.rf_split), train, test,
            input_core_dims=[[names.STEP], [names.STEP]], vectorize=True, output_dtypes=[float])

    def settled_gap(train: xr.DataArray, test: xr.DataArray) -> xr.DataArray:
        gap = test - train
        return _per_run(gap.isel({names.STEP: early}) / gap.isel({names.STEP: -1}))

    tau_split = split_times(cube[names.TRAIN_LOSS], cube[names.TEST_LOSS])
    # in steps, then to tau: onset_step interpolates in log(step) and treats step 0 as step 1
    tau_gen = tau_per_step * xr.apply_ufunc(
        lambda v: quality_onset(steps, v, tolerance=fit.tau_gen_tolerance), cube[names.SCORE_ERROR],
        input_core_dims=[[names.STEP]], vectorize=True, output_dtypes=[float])
    boot = {"num_bootstrap": fit.num_bootstrap, "ci_level": fit.ci_level, "rng": rng, "alpha": fit.lack_of_fit_alpha}
    variables = scaling_fit(tau_split, prefix=names.TAU_SPLIT, **boot)
    variables["gap_settled"] = settled_gap(cube[names.TRAIN_LOSS], cube[names.TEST_LOSS])
    # the gaps of A's parts by modes of U, read the same way (cubes written before the mode split lack them)
    mode_splits = {part: keys for part, keys in MODE_SPLITS.items() if keys[1] in cube and keys[2] in cube}
    for part, (prefix, train_key, test_key) in mode_splits.items():
        variables.update(scaling_fit(split_times(cube[train_key], cube[test_key]), prefix=prefix, **boot))
        variables[f"gap_settled_{part}"] = settled_gap(cube[train_key], cube[test_key])
        variables[f"gap_final_{part}"] = _final_gap(cube[train_key], cube[test_key])
    if mode_splits:
        variables["gap_final"] = _final_gap(cube[names.TRAIN_LOSS], cube[names.TEST_LOSS])
    levels = xr.DataArray(np.asarray(GAP_LEVELS), dims=(names.GAP_LEVEL,), coords={names.GAP_LEVEL: list(GAP_LEVELS)})
    tau_levels = xr.apply_ufunc(
        lambda tr, te, q: _level_tau(tr, te, tau, q), cube[names.TRAIN_LOSS], cube[names.TEST_LOSS], levels,
        input_core_dims=[[names.STEP], [names.STEP], []], vectorize=True, output_dtypes=[float])
    tau_levels = _per_run(tau_levels, names.GAP_LEVEL)
    variables.update(scaling_fit(tau_levels, prefix=names.TAU_SPLIT_LEVELS, **boot))

    variables.update(scaling_fit(tau_gen, prefix=names.TAU_GEN, **boot))
    if cube.sizes[names.SEED] < 3:  # a bootstrap over one or two seeds is no interval
        for key in (f"{names.TAU_SPLIT}_exponent_ci", f"{names.TAU_GEN}_exponent_ci",
                    f"{names.TAU_SPLIT_LEVELS}_exponent_ci", *[f"{keys[0]}_exponent_ci" for keys in mode_splits.values()]):
            variables[key] = variables[key] * np.nan
    n = cube[names.N].values
    psi_n = n / d
    theory = np.array([theory_tau_mem(float(pn), psi_p, model.rf_time) for pn in psi_n])
    variables[names.TAU_MEM_THEORY] = xr.DataArray(theory, dims=(names.N,))
    _, theory_exponent = power_law_fit(n, theory)
    variables[f"{names.TAU_MEM_THEORY}_exponent"] = xr.DataArray(theory_exponent)
    ridge = float(model.rf_ridge)
    if names.U_EIGENVALUE in cube:  # flow runs: the theory's formula at the run's own edge of the top n modes
        edge = xr.apply_ufunc(lambda lam, nn: top_edge(lam, int(nn)), cube[names.U_EIGENVALUE], cube[names.N],
                              input_core_dims=[[names.RF_MODE], []], vectorize=True, output_dtypes=[float])
        edge_tau = psi_p / (delta(model.rf_time) * (edge + ridge))
        edge_tau = _per_run(edge_tau)
        variables[names.TAU_MEM_EDGE] = edge_tau
        geo = np.exp(np.log(edge_tau).mean(names.SEED)).values
        variables[f"{names.TAU_MEM_EDGE}_exponent"] = xr.DataArray(power_law_fit(n, geo)[1])

    out = xr.Dataset(variables, coords={names.N: n, names.PSI_N: ((names.N,), psi_n), names.CI_BOUND: ["lower", "upper"]})
    level = f"{fit.ci_level:g}"
    described = {
        names.TAU_SPLIT: ("tau at which the train-test gap reaches half its value at the last checkpoint (log-tau "
                    "interpolated)" if fit.rf_split == "half_gap" else
                    f"first tau at which (test - train) / test loss exceeds rf_gap = {fit.rf_gap:g}", names.TAU_UNITS),
        f"{names.TAU_SPLIT}_censored": ("the train/test gap never opened (tau_split is NaN)", "1"),
        f"{names.TAU_SPLIT}_exponent": ("exponent b of tau_split = A n^b (least squares in log-log)", "1"),
        f"{names.TAU_SPLIT}_prefactor": ("prefactor A of tau_split = A n^b", names.TAU_UNITS),
        f"{names.TAU_SPLIT}_exponent_ci": (f"{level} bootstrap confidence interval of tau_split's exponent, resampling n points and seeds", "1"),
        names.TAU_GEN: (f"first tau at which the score error has closed all but {fit.tau_gen_tolerance:g} of the gap "
                  "between its first and best value", names.TAU_UNITS),
        f"{names.TAU_GEN}_censored": ("the score error never improved (tau_gen is NaN)", "1"),
        f"{names.TAU_GEN}_exponent": ("exponent b of tau_gen = A n^b (least squares in log-log)", "1"),
        f"{names.TAU_GEN}_prefactor": ("prefactor A of tau_gen = A n^b", names.TAU_UNITS),
        f"{names.TAU_GEN}_exponent_ci": (f"{level} bootstrap confidence interval of tau_gen's exponent, resampling n points and seeds", "1"),
        names.TAU_MEM_THEORY: ("theory tau_mem = psi_p / (Delta_t lam_min) (arXiv 2505.17638 Thm 3.2, paper convention: "
                         "twice the e-folding time of the slowest memorizing mode)", names.TAU_UNITS),
        f"{names.TAU_MEM_THEORY}_exponent": ("exponent b of a power-law fit of tau_mem_theory over the n grid", "1"),
        names.PSI_N: ("psi_n = n / d", "1"),
        "gap_settled": ("train-test gap a decade before the last checkpoint over the gap at it (near 1: settled; "
                        "well below 1: the half-gap time is a lower bound)", "1"),
        names.TAU_SPLIT_LEVELS: ("tau at which the train-test gap reaches gap_level of its value at the last "
                                 "checkpoint (log-tau interpolated)", names.TAU_UNITS),
        f"{names.TAU_SPLIT_LEVELS}_exponent": ("exponent b of tau_split_levels = A n^b per gap level", "1"),
        f"{names.TAU_SPLIT_LEVELS}_exponent_ci": (f"{level} bootstrap confidence interval of that exponent", "1"),
        names.TAU_MEM_EDGE: ("psi_p / (Delta_t (lam_edge + rf_ridge)), lam_edge the smallest of U's n largest "
                             "eigenvalues in this run (the empirical counterpart of the theory's lam_min)",
                             names.TAU_UNITS),
        f"{names.TAU_MEM_EDGE}_exponent": ("exponent b of a power-law fit of tau_mem_edge (geometric mean over "
                                           "seeds) over the n grid", "1"),
        "gap_final": ("train-test gap (test - train loss) at the last checkpoint", "1"),
    }
    for part, modes in (("bulk", "U's top n eigenvectors (the theory's memorization bulk)"),
                        ("outside", "U's other p - n eigenvectors (outside the bulk)")):
        prefix = MODE_SPLITS[part][0]
        gap = f"the train-test gap of A restricted to {modes}"
        described.update({
            prefix: (f"{described[names.TAU_SPLIT][0]}, read on {gap}", names.TAU_UNITS),
            f"{prefix}_censored": (f"{gap} never opened ({prefix} is NaN)", "1"),
            f"{prefix}_exponent": (f"exponent b of {prefix} = A n^b (least squares in log-log)", "1"),
            f"{prefix}_prefactor": (f"prefactor A of {prefix} = A n^b", names.TAU_UNITS),
            f"{prefix}_exponent_ci": (f"{level} bootstrap confidence interval of {prefix}'s exponent, resampling n "
                                      "points and seeds", "1"),
            f"gap_settled_{part}": (f"{gap} a decade before the last checkpoint over the same gap at it", "1"),
            f"gap_final_{part}": (f"{gap} at the last checkpoint (gap_final = gap_final_bulk + gap_final_outside + "
                                  "a cross term - the gap at A = 0: diffmem.families.random_features)", "1"),
        })
    for key, (long_name, units) in described.items():
        if key in out:
            out[key].attrs.update({"long_name": long_name, "units": units})
    names.annotate(out)
    out.attrs = {
        "d": d, "p": p, "psi_p": psi_p, "rf_time": float(model.rf_time), "rf_gap": float(fit.rf_gap),
        "rf_split": fit.rf_split, "solver": str(cube.attrs.get("solver", model.rf_solver)), "rf_ridge": ridge,
        "tau_gen_tolerance": float(fit.tau_gen_tolerance), "ci_level": float(fit.ci_level),
        "num_bootstrap": int(fit.num_bootstrap), "num_censored": int(tau_split.isnull().sum()),
        "num_censored_gen": int(tau_gen.isnull().sum()),
        "note": "censored runs (NaN) are excluded from the fits; times in tau = step lr / d^2; "
                + ("tau_split is log-interpolated between checkpoints" if fit.rf_split == "half_gap"
                   else "tau_split is read on the checkpoint grid (no interpolation)"),
    }
    out.attrs.update(carried_provenance(cube.attrs))
    return out




# -------------------------------------------------------------------------------------------------- CLI

def _cmd_train(args) -> None:
    model = ModelConfig.from_dict(read_json_arg(args.model))
    train = TrainConfig.from_dict(read_slice("train", args.train_cfg, args.run_settings))
    if train.lr <= 0 or train.max_steps < 1:
        raise ConfigError("config error at 'train': random features need lr > 0 and max_steps >= 1")
    torch.set_num_threads(max(1, int(train.threads)))
    x, _, _ = load_train(args.train)
    test = load_dataset(args.dataset).test
    ds = rf_run(x, test, model=model, train=train, seed=args.seed)
    result_keys = split_run_settings("train", dataclasses.asdict(train))[0]  # not threads, logging, ...
    ds.attrs.update(provenance(stable_hash({"model": dataclasses.asdict(model), "train": result_keys})))
    atomic_to_netcdf(ds, args.out)
    logger.info(f"n={x.shape[0]} seed={args.seed}: {ds.sizes[names.STEP]} checkpoints -> {args.out}")


def _cmd_fit(args) -> None:
    model = ModelConfig.from_dict(read_json_arg(args.model))
    cfg = FitConfig.from_dict(read_json_arg(args.fit_cfg))
    (cube,) = load_parts([args.cube])
    out = rf_fit(cube, model=model, fit=cfg, rng=np.random.default_rng(0))
    atomic_to_netcdf(out, args.out)
    lo, hi = out[f"{names.TAU_SPLIT}_exponent_ci"].values
    logger.info(f"tau_split ~ n^b with b = {float(out[f'{names.TAU_SPLIT}_exponent']):.3f} [{lo:.3f}, {hi:.3f}] "
             f"({cfg.ci_level:g} CI), {out.attrs['num_censored']} censored runs; theory exponent "
             f"{float(out[f'{names.TAU_MEM_THEORY}_exponent']):.3f} -> {args.out}")
    for prefix in (names.TAU_SPLIT, names.TAU_GEN, *[keys[0] for keys in MODE_SPLITS.values()]):
        if prefix not in out:  # a cube written before the mode split
            continue
        for line in describe_scaling(out, prefix, label=prefix):
            logger.info(line)


def _cmd_plot(args) -> None:
    cube, fit = load_parts([args.cube, args.fit])
    paths = make_rf_figures(cube, fit, args.outdir, title=args.title or cube.attrs.get("experiment", ""))
    logger.info(f"wrote {len(paths)} figures to {args.outdir}")


def _cmd_compare(args) -> None:
    if not len(args.fits) == len(args.cubes) == len(args.labels):
        raise ConfigError("rf-compare: give one --fits, --cubes and --labels entry per experiment")
    parts = load_parts([*args.fits, *args.cubes])
    fits, cubes = parts[: len(args.fits)], parts[len(args.fits):]
    setups = {(f.attrs.get("d"), f.attrs.get("psi_p"), f.attrs.get("rf_time"), tuple(f[names.N].values)) for f in fits}
    if len(setups) > 1:
        raise ConfigError(f"rf-compare: the experiments differ in (d, psi_p, t, n grid): {sorted(setups, key=str)}")
    path = make_rf_compare(list(zip(args.labels, fits)), cubes, args.out, title=args.title)
    logger.info(f"{len(fits)} experiments -> {path}")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem rf", __doc__, "diffmem.stages.rf")
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="one RF training run on one training set (diffmem rf-train)")
    t.add_argument("--train", required=True, help="training subset .npz (diffmem subsample)")
    t.add_argument("--dataset", required=True, help="dataset .npz with the held-out test split (diffmem prepare-data)")
    t.add_argument("--model", required=True, help="model config slice as JSON (or a path to one)")
    t.add_argument("--train-cfg", required=True, help="train config slice as JSON (or a path to one)")
    add_run_settings(t)
    t.add_argument("--seed", type=int, required=True)
    t.add_argument("--out", required=True, help="rf_metrics.nc")
    f = sub.add_parser("fit", help="split times, power-law fits and theory (diffmem rf-fit)")
    f.add_argument("--cube", required=True, help="combine_runs of the rf_metrics.nc files")
    f.add_argument("--model", required=True, help="model config slice as JSON (or a path to one)")
    f.add_argument("--fit-cfg", required=True, help="fit config slice as JSON (or a path to one)")
    f.add_argument("--out", required=True)
    p = sub.add_parser("plot", help="rf_losses.png and rf_split_time.png (diffmem rf-plot)")
    p.add_argument("--cube", required=True)
    p.add_argument("--fit", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--title", default="")
    c = sub.add_parser("compare", help="rf_compare.png: experiments on one setup side by side (diffmem rf-compare)")
    c.add_argument("--fits", nargs="+", required=True, help="fit.nc of each experiment (the first is this one)")
    c.add_argument("--cubes", nargs="+", required=True, help="cube.nc of each experiment, in the same order")
    c.add_argument("--labels", nargs="+", required=True, help="a legend label per experiment")
    c.add_argument("--out", required=True)
    c.add_argument("--title", default="")
    args = parser.parse_args(argv)
    try:
        {"train": _cmd_train, "fit": _cmd_fit, "plot": _cmd_plot, "compare": _cmd_compare}[args.cmd](args)
    except (ConfigError, RFDivergedError) as exc:
        fail(str(exc))


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
