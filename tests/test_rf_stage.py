"""The random-features stage (diffmem.stages.rf): per-run datasets, split-time fit, figures and the CLI."""

import json
import math
from dataclasses import replace as dataclass_replace

import numpy as np
import pytest
import torch
import xarray as xr
from matplotlib.collections import PathCollection
from test_figures import assert_curves, bars, legend, xy

from diffmem import names
from diffmem.config import FitConfig, ModelConfig, TrainConfig, checkpoint_grid
from diffmem.cube import combine_runs, data_dim, load_parts
from diffmem.families import random_features as family
from diffmem.figures import rf as rf_figures
from diffmem.figures.rf import make_rf_figures
from diffmem.io import NETCDF_ENGINE, atomic_to_netcdf
from diffmem.stages import rf
from diffmem.stages.data import main as data_main

MODEL = ModelConfig(family="random_features", psi_p=4.0, rf_time=0.1, rf_num_noise=1, rf_solver="gd")


def _gaussian(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_rf_run_structure_and_gradient_descent_lowers_the_train_loss(tmp_path):
    d, n = 8, 16
    train = TrainConfig(lr=2.0 * d**2, max_steps=300, checkpoints_per_decade=4)
    lines = []
    ds = rf.rf_run(_gaussian(n, d, 0), _gaussian(64, d, 1), model=MODEL, train=train, seed=3, log=lines.append)
    steps = np.asarray(checkpoint_grid({"max_steps": 300, "checkpoints_per_decade": 4}))
    assert dict(ds.sizes) == {names.STEP: steps.size}
    assert ds[names.STEP].dtype == np.int64
    np.testing.assert_array_equal(ds[names.STEP].values, steps)
    np.testing.assert_allclose(ds[names.TAU].values, steps * train.lr / d**2)
    assert ds[names.TAU].dims == (names.STEP,)
    assert int(ds[names.N]) == n and int(ds[names.SEED]) == 3 and int(ds[names.DIM]) == d
    for var in (names.TRAIN_LOSS, names.TEST_LOSS, names.SCORE_ERROR):
        assert ds[var].dims == (names.STEP,)
        assert ds[var].attrs["long_name"] and ds[var].attrs["units"] == "1"
    assert ds.attrs["p"] == 32 and ds.attrs["psi_p"] == 4.0 and ds.attrs["psi_n"] == 2.0
    assert ds.attrs["d"] == d and ds.attrs["rf_time"] == 0.1 and ds.attrs["lr"] == 128.0
    assert ds.attrs["solver"] == "gd"
    assert ds.attrs["lr_stability_bound"] > train.lr and ds.attrs["lr_above_stability_bound"] == 0
    tr = ds[names.TRAIN_LOSS].values
    assert abs(tr[0] - 1.0) < 0.1  # A = 0: (1/d) E||xi||^2
    assert tr[-1] < 0.8 * tr[0]
    assert any("n=16 seed=3" in line for line in lines)
    # deterministic in the seed, and W / noise change with it
    again = rf.rf_run(_gaussian(n, d, 0), _gaussian(64, d, 1), model=MODEL, train=train, seed=3, log=lambda s: None)
    xr.testing.assert_identical(ds, again)
    other = rf.rf_run(_gaussian(n, d, 0), _gaussian(64, d, 1), model=MODEL, train=train, seed=4, log=lambda s: None)
    assert not np.allclose(other[names.TRAIN_LOSS].values[1:], tr[1:])
    atomic_to_netcdf(ds, tmp_path / "run.nc")
    with xr.open_dataset(tmp_path / "run.nc", engine=NETCDF_ENGINE) as back:
        xr.testing.assert_identical(back.load(), ds)


def test_flow_solver_is_the_exact_flow_and_agrees_with_small_step_gradient_descent():
    d, n, seed = 6, 24, 1
    model = dataclass_replace(MODEL, psi_p=6.0, rf_num_noise=16, rf_solver="flow")
    train = TrainConfig(lr=0.05 * d**2, max_steps=400, checkpoints_per_decade=3)
    x, x_test = _gaussian(n, d, 5), _gaussian(96, d, 6)
    flow = rf.rf_run(x, x_test, model=model, train=train, seed=seed, log=lambda s: None)
    assert flow.attrs["solver"] == "flow"
    direct = family.rf_gradient_flow(
        torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(x_test, dtype=torch.float64), p=36, t=0.1,
        taus=flow[names.TAU].values, generator=rf._generator(seed), num_noise=16)
    for var in (names.TRAIN_LOSS, names.TEST_LOSS, names.SCORE_ERROR):
        np.testing.assert_allclose(flow[var].values, direct[var])
    # GD redraws its 16 noise samples per point every step, so with a small step it follows the flow of the
    # noise-averaged loss (E_xi in Eq. (11)): the exact flow with many fixed draws, same W and evaluation noise
    gd = rf.rf_run(x, x_test, model=dataclass_replace(model, rf_solver="gd"), train=train, seed=seed,
                   log=lambda s: None)
    np.testing.assert_array_equal(gd[names.TAU].values, flow[names.TAU].values)
    averaged = family.rf_gradient_flow(
        torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(x_test, dtype=torch.float64), p=36, t=0.1,
        taus=gd[names.TAU].values, generator=rf._generator(seed), num_noise=1024)
    for var, rtol in ((names.TRAIN_LOSS, 0.01), (names.TEST_LOSS, 0.01), (names.SCORE_ERROR, 0.05)):
        np.testing.assert_allclose(gd[var].values, averaged[var], rtol=rtol)
    assert flow[names.TRAIN_LOSS].values[-1] < 0.85 * flow[names.TRAIN_LOSS].values[0]  # a non-trivial path


def test_divergence_stops_with_a_clear_error_and_the_cli_fails_cleanly(tmp_path, capsys):
    d = 6
    train = TrainConfig(lr=1e4 * d**2, max_steps=2000, checkpoints_per_decade=8)
    with pytest.raises(rf.RFDivergedError, match=r"non-finite train_loss at step \d+.*smaller train.lr"):
        rf.rf_run(_gaussian(12, d, 0), _gaussian(32, d, 1), model=MODEL, train=train, seed=0, log=lambda s: None)
    dataset, subset = _prepare(tmp_path, d=d, pool_size=64, n_test=32, n=12, seed=0)
    with pytest.raises(SystemExit, match="^2$") as exc:  # fail(): a user error, its cause on stderr
        rf.main(["train", "--train", str(subset), "--dataset", str(dataset), "--model", json.dumps({"psi_p": 4.0}),
                 "--train-cfg", json.dumps({"lr": 1e4 * d**2, "max_steps": 2000}), "--seed", "0",
                 "--out", str(tmp_path / "x.nc")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "smaller train.lr" in err and "Traceback" not in err
    assert not (tmp_path / "x.nc").exists()


def test_gd_lr_bound_separates_stable_from_divergent_learning_rates():
    d, p, n, t, m = 5, 20, 15, 0.2, 64
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = torch.randn(p, d, generator=torch.Generator().manual_seed(11), dtype=torch.float64)  # the W training draws
    bound = rf.gd_lr_bound(x, w, t=t, num_noise=m, generator=torch.Generator().manual_seed(1))
    finals = {}
    for factor in (0.8, 1.25):
        res = family.train_random_features(
            x, x, p=p, t=t, lr=factor * bound, num_steps=300, generator=torch.Generator().manual_seed(11),
            num_noise=m, resample_noise=False, record_steps=[0, 300], num_eval_noise=2)
        finals[factor] = res["train_loss"]
    assert np.isfinite(finals[0.8][-1]) and finals[0.8][-1] < finals[0.8][0]
    assert not np.isfinite(finals[1.25][-1]) or finals[1.25][-1] > 1e6


def _synthetic_run(n: int, seed: int, *, d: int, lr: float, split_step: int | None) -> xr.Dataset:
    steps = np.array([0, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640, 1000], dtype=np.int64)
    train = np.full(steps.size, 0.5)
    test = train.copy()
    if split_step is not None:
        test[steps >= split_step] = 0.8  # relative gap 0.375 from split_step on
    err = np.where(steps >= 40, 0.1, 1.0)  # score error reaches its best at step 40 whatever n
    return xr.Dataset(
        {names.TRAIN_LOSS: (names.STEP, train), names.TEST_LOSS: (names.STEP, test), names.SCORE_ERROR: (names.STEP, err)},
        coords={names.STEP: steps, names.TAU: (names.STEP, steps * lr / d**2), names.N: n, names.SEED: seed, names.DIM: d},
    )


def _synthetic_cube(d=8, lr=32.0):
    split = {32: 20, 64: 40, 128: 80, 256: 160}  # proportional to n: exponent 1
    parts = [
        _synthetic_run(n, s, d=d, lr=lr, split_step=None if (n, s) == (256, 2) else split[n])
        for n in split for s in range(3)
    ]
    return combine_runs(parts, attrs={"experiment": "synthetic"}), split


def test_rf_fit_recovers_a_planted_split_time_and_flags_censored_runs():
    d, lr = 8, 32.0
    cube, split = _synthetic_cube(d, lr)
    model = dataclass_replace(MODEL, psi_p=64.0)
    fit = rf.rf_fit(cube, model=model, fit=FitConfig(rf_gap=0.2, rf_split="threshold", num_bootstrap=200), rng=np.random.default_rng(0))
    tau_split = fit[names.TAU_SPLIT].transpose(names.N, names.SEED)
    for i, n in enumerate(split):
        expect = [split[n] * lr / d**2] * 3
        if n == 256:
            expect[2] = np.nan
        np.testing.assert_allclose(tau_split.values[i], expect)
    censored = fit[f"{names.TAU_SPLIT}_censored"].transpose(names.N, names.SEED).values
    assert censored.sum() == 1 and censored[-1, 2]
    assert fit.attrs["num_censored"] == 1
    assert math.isclose(float(fit[f"{names.TAU_SPLIT}_exponent"]), 1.0, abs_tol=1e-9)
    lo, hi = fit[f"{names.TAU_SPLIT}_exponent_ci"].values
    assert lo <= 1.0 + 1e-9 and hi >= 1.0 - 1e-9
    assert math.isclose(float(fit[f"{names.TAU_SPLIT}_prefactor"]), 20 * lr / d**2 / 32, rel_tol=1e-9)
    # tau_gen: score error best from step 40 on, the same for every n
    # closes 90 % of its first-to-best gap at 0.19, log-interpolated between steps 20 and 40
    np.testing.assert_allclose(fit[names.TAU_GEN].values, 20 * 2**0.9 * lr / d**2)
    assert abs(float(fit[f"{names.TAU_GEN}_exponent"])) < 1e-9
    np.testing.assert_allclose(fit[names.PSI_N].values, np.array(list(split)) / d)
    theory = [family.theory_tau_mem(n / d, 64.0, 0.1) for n in split]
    np.testing.assert_allclose(fit[names.TAU_MEM_THEORY].values, theory)
    assert fit[names.TAU_MEM_THEORY].dims == (names.N,)
    for var in fit.data_vars:
        assert fit[var].attrs.get("long_name") and fit[var].attrs.get("units"), var
    assert fit.attrs["rf_gap"] == 0.2 and fit.attrs["experiment"] == "synthetic"
    # a larger rf_gap than the planted gap never opens: every run censored, no fit
    none = rf.rf_fit(cube, model=model, fit=FitConfig(rf_gap=0.5, rf_split="threshold", num_bootstrap=20), rng=np.random.default_rng(0))
    assert bool(none[f"{names.TAU_SPLIT}_censored"].all()) and np.isnan(float(none[f"{names.TAU_SPLIT}_exponent"]))


def check_rf_figures(figs: dict, cube: xr.Dataset, fit: xr.Dataset) -> None:
    """rf_losses.png: train loss, test loss and score error against tau, one curve per n (mean over seeds,
    psi_n in the legend), the test loss with each n's split time; rf_split_time.png: the split time and
    tau_gen of every run against psi_n, their geometric means, the fits and the theory."""
    tau, d = cube[names.TAU].values, data_dim(cube)
    keep = tau > 0
    axes = figs["rf_losses.png"].axes
    for ax, var in zip(axes, (names.TRAIN_LOSS, names.TEST_LOSS, names.SCORE_ERROR)):
        assert_curves(ax.lines[: cube.sizes[names.N]] if var != names.TEST_LOSS else
                      [line for line in ax.lines if len(line.get_xdata()) > 2],
                      [(tau[keep], np.nanmean(cube[var].sel({names.N: n}).values[:, keep], axis=0))
                       for n in cube[names.N].values])
    assert legend(axes[0]) == [f"psi_n = {n / d:g}" for n in cube[names.N].values]
    splits = [float(line.get_xdata()[0]) for line in axes[1].lines if len(line.get_xdata()) == 2]
    geo = np.exp(np.nanmean(np.log(fit[names.TAU_SPLIT].transpose(names.N, names.SEED).values), axis=1))
    np.testing.assert_allclose(splits, geo[np.isfinite(geo)])
    ax = figs["rf_split_time.png"].axes[0]
    psi_n = fit[names.PSI_N].values
    seeds = fit.sizes[names.SEED]
    scatters = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_label().startswith("_")]
    for k, var in enumerate(v for v in (names.TAU_SPLIT, names.TAU_GEN) if v in fit):
        vals = fit[var].transpose(names.N, names.SEED).values
        for j in range(seeds):  # one scatter per seed (a censored run's NaN is not drawn)
            np.testing.assert_allclose(scatters[k * seeds + j].get_offsets(), np.column_stack([psi_n, vals[:, j]]))
        g = np.exp(np.nanmean(np.log(vals), axis=1))
        np.testing.assert_allclose(np.column_stack(xy(bars(ax)[k])), np.column_stack([psi_n, g])[np.isfinite(g)])
    theory = [line for line in ax.lines if line.get_label().startswith("theory tau_mem")]
    np.testing.assert_allclose(xy(theory[0])[1], fit[names.TAU_MEM_THEORY].values)


def test_figures_show_the_losses_and_the_split_times(tmp_path, drawn):
    cube, _ = _synthetic_cube()
    fit = rf.rf_fit(cube, model=dataclass_replace(MODEL, psi_p=64.0), fit=FitConfig(rf_gap=0.2, num_bootstrap=20),
                    rng=np.random.default_rng(0))
    figs = drawn.watch(rf_figures)
    paths = make_rf_figures(cube, fit, tmp_path / "figs", title="synthetic")
    assert sorted(p.name for p in paths) == sorted(figs) == ["rf_losses.png", "rf_split_time.png"]
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["rf_losses.png", "rf_split_time.png"]
    check_rf_figures(figs, cube, fit)
    assert figs["rf_split_time.png"].axes[0].get_title().startswith("synthetic: d = ")


def _prepare(tmp_path, *, d, pool_size, n_test, n, seed):
    dataset = tmp_path / "dataset.npz"
    if not dataset.exists():
        data = {"dataset": "gaussian", "dim": d, "pool_size": pool_size, "n_test": n_test, "seeds": [0]}
        data_main(["prepare", "--data", json.dumps(data), "--out", str(dataset)])
    subset = tmp_path / f"train_n{n}_s{seed}.npz"
    data_main(["subsample", "--dataset", str(dataset), "--n", str(n), "--seed", str(seed), "--out", str(subset)])
    return dataset, subset


def test_cli_end_to_end_on_a_small_gaussian_dataset(tmp_path):
    d = 8
    model = json.dumps({"family": "random_features", "psi_p": 16.0, "rf_time": 0.1, "rf_solver": "gd"})
    train = json.dumps({"lr": 2.0 * d**2, "max_steps": 300, "checkpoints_per_decade": 5})
    runs = []
    for n in (16, 64):
        for seed in (0, 1):
            dataset, subset = _prepare(tmp_path, d=d, pool_size=128, n_test=64, n=n, seed=seed)
            out = tmp_path / f"rf_n{n}_s{seed}.nc"
            rf.main(["train", "--train", str(subset), "--dataset", str(dataset), "--model", model, "--train-cfg", train,
                     "--seed", str(seed), "--out", str(out)])
            runs.append(str(out))
    cube = combine_runs(load_parts(runs), attrs={"experiment": "cli"})
    assert dict(cube.sizes)[names.N] == 2 and dict(cube.sizes)[names.SEED] == 2
    atomic_to_netcdf(cube, tmp_path / "cube.nc")
    fit_cfg = json.dumps({"rf_gap": 0.1, "num_bootstrap": 50})
    rf.main(["fit", "--cube", str(tmp_path / "cube.nc"), "--model", model, "--fit-cfg", fit_cfg,
             "--out", str(tmp_path / "fit.nc")])
    with xr.open_dataset(tmp_path / "fit.nc", engine=NETCDF_ENGINE) as fit:
        assert fit[names.TAU_SPLIT].dims == (names.N, names.SEED)
        np.testing.assert_allclose(fit[names.PSI_N].values, [2.0, 8.0])
        assert fit.attrs["p"] == 128 and fit.attrs["d"] == d
        # 16 points, 128 features: the gap opens within the run, after training has started
        split = fit[names.TAU_SPLIT].sel({names.N: 16}).values
        assert np.isfinite(split).all() and (split > 0).all()
    rf.main(["plot", "--cube", str(tmp_path / "cube.nc"), "--fit", str(tmp_path / "fit.nc"),
             "--outdir", str(tmp_path / "figs")])
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["rf_losses.png", "rf_split_time.png"]


def test_cli_rejects_a_bad_config(tmp_path, capsys):
    dataset, subset = _prepare(tmp_path, d=4, pool_size=32, n_test=16, n=8, seed=0)
    with pytest.raises(SystemExit, match="^2$") as exc:  # fail(): a user error, its cause on stderr
        rf.main(["train", "--train", str(subset), "--dataset", str(dataset), "--model", json.dumps({"psi_q": 2}),
                 "--train-cfg", "{}", "--seed", "0", "--out", str(tmp_path / "x.nc")])
    assert exc.value.code == 2 and "psi_q" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="^2$"):  # fail(): a user error, its cause on stderr
        rf.main(["train", "--train", str(subset), "--dataset", str(dataset), "--model", json.dumps({"rf_solver": "sgd"}),
                 "--train-cfg", "{}", "--seed", "0", "--out", str(tmp_path / "x.nc")])
    assert "rf_solver" in capsys.readouterr().err


def test_half_gap_time_of_an_exponential_approach_is_tau0_ln2():
    taus = np.geomspace(1e-2, 1e4, 400)
    for tau0, g_inf in ((3.0, 0.2), (150.0, 0.01)):
        gap = g_inf * -np.expm1(-taus / tau0)
        got = family.half_gap_time(np.ones_like(taus), 1.0 + gap, taus)
        assert math.isclose(got, tau0 * math.log(2), rel_tol=2e-3), (tau0, got)
    # the gap's size does not matter (a threshold on it would): scaling it leaves the time unchanged
    gap = -np.expm1(-taus / 7.0)
    assert family.half_gap_time(np.zeros_like(taus), 1e-3 * gap, taus) == family.half_gap_time(
        np.zeros_like(taus), 10.0 * gap, taus)
    # no split: a final gap <= 0 gives None; tau <= 0 points are ignored
    assert family.half_gap_time(np.ones(5), np.ones(5), np.arange(5.0)) is None
    assert family.half_gap_time([1.0, 1.0, 1.0], [9.0, 1.0, 2.0], [0.0, 1.0, 2.0]) == pytest.approx(
        math.exp(0.5 * math.log(2.0)))


def test_rf_fit_half_gap_recovers_a_linear_scaling_with_shrinking_gaps():
    d, lr = 8, 1.0
    steps = np.unique(np.round(np.geomspace(1, 1e6, 80)).astype(np.int64))
    steps = np.concatenate([[0], steps])
    tau = steps * lr / d**2
    parts = []
    for n in (32, 64, 128, 256):
        for s in range(3):
            tau0 = 5.0 * n * (1 + 0.05 * s)  # proportional to n
            gap = (8.0 / n) * -np.expm1(-tau / tau0)  # the long-time gap shrinks like 1 / n
            parts.append(xr.Dataset(
                {names.TRAIN_LOSS: (names.STEP, np.full(tau.size, 0.5)), names.TEST_LOSS: (names.STEP, 0.5 + gap),
                 names.SCORE_ERROR: (names.STEP, np.exp(-tau))},
                coords={names.STEP: steps, names.TAU: (names.STEP, tau), names.N: n, names.SEED: s, names.DIM: d}))
    cube = combine_runs(parts, attrs={"experiment": "synthetic"})
    model = dataclass_replace(MODEL, psi_p=64.0)
    fit = rf.rf_fit(cube, model=model, fit=FitConfig(num_bootstrap=200), rng=np.random.default_rng(0))
    assert fit.attrs["rf_split"] == "half_gap"
    expect = np.array([[5.0 * n * (1 + 0.05 * s) * math.log(2) for s in range(3)] for n in (32, 64, 128, 256)])
    np.testing.assert_allclose(fit[names.TAU_SPLIT].transpose(names.N, names.SEED).values, expect, rtol=1e-2)
    assert math.isclose(float(fit[f"{names.TAU_SPLIT}_exponent"]), 1.0, abs_tol=0.01)
    # the fixed 10 % threshold on the same curves is biased upward by the shrinking gap
    old = rf.rf_fit(cube, model=model, fit=FitConfig(rf_split="threshold", rf_gap=0.1, num_bootstrap=20),
                    rng=np.random.default_rng(0))
    assert float(old[f"{names.TAU_SPLIT}_exponent"]) > 1.2


def _planted_gap_cube(gap_of, *, d=8, seeds=3):
    """A cube whose train-test gap is gap_of(tau, n, seed) (train loss flat at 0.5)."""
    steps = np.concatenate([[0], np.unique(np.round(np.geomspace(1, 1e7, 140)).astype(np.int64))])
    tau = steps / d**2  # lr = 1
    parts = [xr.Dataset(
        {names.TRAIN_LOSS: (names.STEP, np.full(tau.size, 0.5)), names.TEST_LOSS: (names.STEP, 0.5 + gap_of(tau, n, s)),
         names.SCORE_ERROR: (names.STEP, np.exp(-tau))},
        coords={names.STEP: steps, names.TAU: (names.STEP, tau), names.N: n, names.SEED: s, names.DIM: d})
        for n in (32, 64, 128, 256) for s in range(seeds)]
    return combine_runs(parts, attrs={"experiment": "planted"})


def test_gap_levels_read_a_single_mode_at_every_level_and_separate_a_fast_and_a_slow_one():
    model = dataclass_replace(MODEL, psi_p=64.0)
    cfg = FitConfig(num_bootstrap=100)
    # one mode with tau_0 proportional to n: every level gives -tau_0 ln(1 - q) and exponent 1
    single = _planted_gap_cube(lambda tau, n, s: (4.0 / n) * -np.expm1(-tau / (3.0 * n * (1 + 0.1 * s))))
    fit = rf.rf_fit(single, model=model, fit=cfg, rng=np.random.default_rng(0))
    levels = fit[names.GAP_LEVEL].values
    np.testing.assert_array_equal(levels, rf.GAP_LEVELS)
    got = fit[names.TAU_SPLIT_LEVELS].transpose(names.GAP_LEVEL, names.N, names.SEED).values
    expect = np.array([[[-3.0 * n * (1 + 0.1 * s) * math.log(1 - q) for s in range(3)] for n in (32, 64, 128, 256)]
                       for q in levels])
    np.testing.assert_allclose(got, expect, rtol=1e-2)
    np.testing.assert_allclose(fit[f"{names.TAU_SPLIT_LEVELS}_exponent"].values, 1.0, atol=0.01)
    np.testing.assert_allclose(got[list(levels).index(0.5)], fit[names.TAU_SPLIT].transpose(names.N, names.SEED).values)
    ci = fit[f"{names.TAU_SPLIT_LEVELS}_exponent_ci"].transpose(names.GAP_LEVEL, names.CI_BOUND).values
    assert (ci[:, 0] <= 1.0 + 1e-2).all() and (ci[:, 1] >= 1.0 - 1e-2).all()
    # half the gap from a fast mode growing with n, half from a slow mode that does not: the exponent falls
    # from ~1 at low levels to ~0 at high levels (the pattern rf_cmp_* shows)
    two = _planted_gap_cube(lambda tau, n, s: 0.5 * -np.expm1(-tau / (2.0 * n)) + 0.5 * -np.expm1(-tau / 1e5))
    b = rf.rf_fit(two, model=model, fit=cfg, rng=np.random.default_rng(0))[f"{names.TAU_SPLIT_LEVELS}_exponent"]
    assert float(b.sel({names.GAP_LEVEL: 0.1})) > 0.9 and float(b.sel({names.GAP_LEVEL: 0.9})) < 0.1
    assert (np.diff(b.values) < 0.02).all()


def test_top_edge_is_the_lower_edge_of_the_n_largest_eigenvalues():
    lam = np.array([5.0, 0.1, 3.0, 0.2, 4.0, np.nan])
    assert rf.top_edge(lam, 3) == 3.0 and rf.top_edge(lam, 1) == 5.0
    assert rf.top_edge(lam, 10) == 0.1  # n >= p: all of them
    assert math.isnan(rf.top_edge(np.array([np.nan]), 2))


def test_flow_run_records_the_spectrum_of_u_and_the_fit_reads_the_theory_at_its_edge():
    d, seeds, t = 6, (0, 1, 2), 0.1
    model = dataclass_replace(MODEL, psi_p=6.0, rf_num_noise=0, rf_solver="flow", rf_ridge=0.01)
    train = TrainConfig(lr=d**2, max_steps=10**4, checkpoints_per_decade=3)
    x_test = _gaussian(64, d, 9)
    parts = []
    for n in (12, 24):
        for seed in seeds:
            x = _gaussian(n, d, 10 * n + seed)
            ds = rf.rf_run(x, x_test, model=model, train=train, seed=seed, log=lambda s: None)
            assert ds.attrs["rf_ridge"] == 0.01
            lam = ds[names.U_EIGENVALUE].values
            assert lam.shape == (36,) and (np.diff(lam) >= 0).all()
            w = torch.randn(36, d, generator=rf._generator(seed), dtype=torch.float64)  # the run's W
            u, _ = family.noise_averaged_moments(torch.as_tensor(x, dtype=torch.float64), w, t=t)
            np.testing.assert_allclose(lam, np.clip(np.linalg.eigvalsh(u.numpy()), 0, None), atol=1e-10)
            parts.append(ds)
    cube = combine_runs(parts, attrs={"experiment": "spectrum"})
    fit = rf.rf_fit(cube, model=model, fit=FitConfig(num_bootstrap=20), rng=np.random.default_rng(0))
    assert fit.attrs["rf_ridge"] == 0.01
    for n in (12, 24):
        for seed in seeds:
            lam = cube[names.U_EIGENVALUE].sel({names.N: n, names.SEED: seed}).values
            expect = 6.0 / (family.delta(t) * (np.sort(lam)[36 - n] + 0.01))
            assert math.isclose(float(fit[names.TAU_MEM_EDGE].sel({names.N: n, names.SEED: seed})), expect, rel_tol=1e-12)
    assert np.isfinite(float(fit[f"{names.TAU_MEM_EDGE}_exponent"]))


def test_ridge_zero_is_todays_run_and_a_ridge_changes_gradient_descent(tmp_path):
    d, n = 8, 16
    train = TrainConfig(lr=2.0 * d**2, max_steps=200, checkpoints_per_decade=4)
    x, x_test = _gaussian(n, d, 0), _gaussian(64, d, 1)
    plain = rf.rf_run(x, x_test, model=MODEL, train=train, seed=3, log=lambda s: None)
    zero = rf.rf_run(x, x_test, model=dataclass_replace(MODEL, rf_ridge=0.0), train=train, seed=3, log=lambda s: None)
    xr.testing.assert_identical(plain, zero)
    ridged = rf.rf_run(x, x_test, model=dataclass_replace(MODEL, rf_ridge=0.5), train=train, seed=3, log=lambda s: None)
    assert ridged.attrs["rf_ridge"] == 0.5
    assert ridged[names.TRAIN_LOSS].values[-1] > plain[names.TRAIN_LOSS].values[-1]  # the penalty holds A back


def test_compare_cli_draws_experiments_on_one_setup_and_refuses_mixed_setups(tmp_path, drawn):
    from diffmem.figures import rf_compare
    cube, _ = _synthetic_cube()
    model = dataclass_replace(MODEL, psi_p=64.0)
    paths = {}
    for name, scale in (("a", 1.0), ("b", 2.0)):
        c = cube.copy()
        c[names.TEST_LOSS] = c[names.TRAIN_LOSS] + scale * (c[names.TEST_LOSS] - c[names.TRAIN_LOSS])
        fit = rf.rf_fit(c, model=model, fit=FitConfig(num_bootstrap=20), rng=np.random.default_rng(0))
        atomic_to_netcdf(c, tmp_path / f"{name}_cube.nc")
        atomic_to_netcdf(fit, tmp_path / f"{name}_fit.nc")
        paths[name] = fit
    figs = drawn.watch(rf_compare)
    rf.main(["compare", "--fits", str(tmp_path / "a_fit.nc"), str(tmp_path / "b_fit.nc"), "--cubes",
             str(tmp_path / "a_cube.nc"), str(tmp_path / "b_cube.nc"), "--labels", "a", "b",
             "--out", str(tmp_path / "cmp.png")])
    assert (tmp_path / "cmp.png").exists()
    ax_split, ax_levels = figs["cmp.png"].axes[:2]  # no spectrum recorded: two panels
    assert len(figs["cmp.png"].axes) == 2
    labels = legend(ax_split)
    assert labels[0].startswith("a: psi_n^") and labels[1].startswith("b: psi_n^")
    assert any(lab.startswith("theory tau_mem") for lab in labels)
    assert {"a", "b", "theory tau_mem"} <= set(legend(ax_levels))
    # another d is another setup
    other = rf.rf_fit(_planted_gap_cube(lambda tau, n, s: -np.expm1(-tau / n), d=16), model=model,
                      fit=FitConfig(num_bootstrap=10), rng=np.random.default_rng(0))
    atomic_to_netcdf(other, tmp_path / "c_fit.nc")
    with pytest.raises(SystemExit):
        rf.main(["compare", "--fits", str(tmp_path / "a_fit.nc"), str(tmp_path / "c_fit.nc"), "--cubes",
                 str(tmp_path / "a_cube.nc"), str(tmp_path / "a_cube.nc"), "--labels", "a", "c",
                 "--out", str(tmp_path / "bad.png")])
