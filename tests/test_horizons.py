"""The training-length readout (diffmem.horizons): tau_mem and its exponent from the runs cut at each horizon."""

import numpy as np
import pytest
import torch
import xarray as xr

from diffmem import names
from diffmem.checkpoint import checkpoint_path, load_checkpoint
from diffmem.config import FitConfig, ModelConfig, TrainConfig, checkpoint_grid
from diffmem.engine import run_training
from diffmem.horizons import F_MEM_AT_HORIZON, HORIZON, TAU_MEM_HORIZONS, horizon_fits, horizon_onsets
from diffmem.onsets import fit_onsets, onset_times

STEPS = np.array(checkpoint_grid({"max_steps": 100_000, "checkpoints_per_decade": 6, "checkpoint_steps": None}))


def planted_cube(tau: np.ndarray, n: np.ndarray) -> xr.Dataset:
    """f_mem (n, seed, step): a logistic rise in log-step centred on tau [N, S], on diffmem's log grid."""
    f = 1 / (1 + np.exp(-4 * (np.log(np.maximum(STEPS, 1))[None, None, :] - np.log(tau)[:, :, None])))
    return xr.Dataset({names.F_MEM: ((names.N, names.SEED, names.STEP), f)},
                      coords={names.N: n, names.SEED: np.arange(tau.shape[1]), names.STEP: STEPS})


def read(cube, horizons, threshold=0.5, normalization="raw"):
    """The readout on raw f_mem (normalization None: both)."""
    out = horizon_fits(cube[names.F_MEM], horizons, threshold=threshold, num_bootstrap=200, ci_level=0.95,
                       rng=np.random.default_rng(0), alpha=0.05)
    return out if normalization is None else out.sel({names.NORMALIZATION: normalization}, drop=True)


N = np.array([16, 32, 64, 128])


def test_a_horizon_past_every_onset_gives_the_fit_stages_reading():
    tau = 20.0 * N[:, None] ** 1.0 * np.exp(0.05 * np.random.default_rng(0).normal(size=(N.size, 3)))
    cube = planted_cube(tau, N)
    readout = read(cube, [100_000])
    fit = fit_onsets(cube, FitConfig(tau_mem_threshold=0.5, num_bootstrap=200), rng=np.random.default_rng(0))
    xr.testing.assert_equal(readout[TAU_MEM_HORIZONS].sel({HORIZON: 100_000}, drop=True), fit[names.TAU_MEM])
    assert float(readout[f"{TAU_MEM_HORIZONS}_exponent"].sel({HORIZON: 100_000})) == pytest.approx(
        float(fit[names.TAU_MEM_EXPONENT]))
    assert float(readout[f"{TAU_MEM_HORIZONS}_exponent"].sel({HORIZON: 100_000})) == pytest.approx(1.0, abs=0.05)


def test_a_run_is_censored_exactly_when_it_memorizes_after_the_horizon():
    tau = 20.0 * N[:, None] ** 1.0 * np.array([[0.9, 1.1]])  # n = 128: ~2,300 and ~2,800 steps
    cube = planted_cube(tau, N)
    full = onset_times(cube[names.F_MEM], threshold=0.5)
    for horizon in (int(s) for s in STEPS[(STEPS >= 100) & (STEPS <= 10_000)]):
        cut = horizon_onsets(cube[names.F_MEM], [horizon], threshold=0.5).sel(
            {HORIZON: horizon, names.NORMALIZATION: "raw"}, drop=True)
        later = full > horizon
        assert bool(cut.isnull().equals(later)), horizon  # censored = memorized after S
        xr.testing.assert_equal(cut.where(~later), full.where(~later))  # the others read as in the long run


def test_the_exponent_by_horizon_counts_censored_runs_and_f_mem_at_the_horizon():
    tau = 20.0 * N[:, None] ** 1.0 * np.array([[0.9, 1.1]])
    cube = planted_cube(tau, N)
    horizons = [int(s) for s in STEPS if s in (1000, 2154, 4642)]
    assert len(horizons) == 3, STEPS  # the horizons are grid steps
    readout = read(cube, horizons)
    censored = readout[f"{TAU_MEM_HORIZONS}_censored"].sum((names.N, names.SEED)).values
    assert list(censored) == [int((tau > h).sum()) for h in horizons]
    assert list(censored) == [4, 2, 0]  # n = 64 (~1,150, ~1,400) and 128 at S = 1,000; n = 128 at 2,154
    b = readout[f"{TAU_MEM_HORIZONS}_exponent"].values
    assert b[-1] == pytest.approx(1.0, abs=1e-3)  # noiseless rise: every run read
    assert not bool(readout[f"{TAU_MEM_HORIZONS}_{names.POWER_LAW_OK}"].values[0])  # censored: not confirmed
    last = {h: int(STEPS[STEPS <= h][-1]) for h in horizons}
    for h in horizons:
        expected = cube[names.F_MEM].sel({names.STEP: last[h]}, drop=True)
        xr.testing.assert_allclose(readout[F_MEM_AT_HORIZON].sel({HORIZON: h}, drop=True), expected)


def test_a_growing_exponent_is_seen_growing():
    # the large n memorize late: their onsets are censored at short horizons and read at long ones
    tau = np.array([[300.0, 320], [500, 520], [1500, 1600], [9000, 9500]])
    readout = read(planted_cube(tau, N), [int(s) for s in STEPS if s in (2154, 21544)])
    b = readout[f"{TAU_MEM_HORIZONS}_exponent"].values
    assert b[1] > b[0] + 0.3
    assert b[1] == pytest.approx(np.polyfit(np.log(N), np.log(tau).mean(axis=1), 1)[0], abs=0.01)  # log-step interpolation


def test_the_normalized_onset_moves_with_the_horizon_and_matches_the_fit_stages_at_the_end():
    # f_mem keeps rising after the onset: normalized by f_mem at S, a run's onset moves later as S grows
    tau = 20.0 * N[:, None] ** 1.0 * np.array([[0.9, 1.1]])
    cube = planted_cube(tau, N)
    readout = horizon_onsets(cube[names.F_MEM], [10_000, 100_000], threshold=0.5).sel({names.NORMALIZATION: "final"})
    early, late = readout.sel({HORIZON: 10_000}), readout.sel({HORIZON: 100_000})
    assert bool((late >= early).all()) and bool((late > early).any())
    fit = fit_onsets(cube, FitConfig(tau_mem_threshold=0.5, tau_mem_levels=[0.5], num_bootstrap=50),
                     rng=np.random.default_rng(0))
    at_end = fit[names.TAU_MEM_LEVELS].sel({names.NORMALIZATION: "final", names.LEVEL: 0.5}, drop=True)
    xr.testing.assert_allclose(late.drop_vars([HORIZON, names.NORMALIZATION]), at_end)
    # by hand, one run: f_mem / f_mem(S = 10,000) first reaches 0.5
    curve = cube[names.F_MEM].sel({names.N: 64, names.SEED: 0})
    cut = curve.sel({names.STEP: STEPS[STEPS <= 10_000]})
    by_hand = onset_times(cut / float(cut[-1]), threshold=0.5)
    assert float(early.sel({names.N: 64, names.SEED: 0})) == pytest.approx(float(by_hand))


def test_horizons_past_the_last_checkpoint_are_dropped():
    cube = planted_cube(20.0 * N[:, None] * np.ones((1, 2)), N)
    cube[names.F_MEM].loc[{names.N: 16, names.SEED: 1, names.STEP: STEPS[STEPS > 46_416]}] = np.nan  # a shorter run
    readout = read(cube, [1000, 46_416, 100_000])
    assert list(readout[HORIZON].values) == [1000, 46_416]
    with pytest.raises(ValueError, match="no horizon"):
        read(cube, [100_000])


def test_the_readout_survives_netcdf(tmp_path):
    from diffmem.io import NETCDF_ENGINE, atomic_to_netcdf

    readout = read(planted_cube(20.0 * N[:, None] * np.array([[0.9, 1.1]]), N), [1000, 4642], normalization=None)
    atomic_to_netcdf(readout, tmp_path / "h.nc")
    with xr.open_dataset(tmp_path / "h.nc", engine=NETCDF_ENGINE) as back:
        xr.testing.assert_allclose(back.load()[TAU_MEM_HORIZONS], readout[TAU_MEM_HORIZONS])
    assert readout[TAU_MEM_HORIZONS].attrs["long_name"].startswith("first step")
    assert "horizon" in readout[f"{TAU_MEM_HORIZONS}_exponent"].attrs["long_name"]


def test_the_stage_and_its_figure(tmp_path):
    from diffmem.io import NETCDF_ENGINE, atomic_to_netcdf
    from diffmem.stages import horizons as stage

    cube = planted_cube(20.0 * N[:, None] * np.array([[0.9, 1.1]]), N)
    atomic_to_netcdf(cube, tmp_path / "cube.nc")
    stage.main(["fit", "--cube", str(tmp_path / "cube.nc"), "--out", str(tmp_path / "h.nc"),
                "--fit-cfg", '{"tau_mem_threshold": 0.5, "num_bootstrap": 50, "horizons": [1000, 2154, 4642]}'])
    with xr.open_dataset(tmp_path / "h.nc", engine=NETCDF_ENGINE) as readout:
        assert list(readout[HORIZON].values) == [1000, 2154, 4642]
    stage.main(["plot", "--cube", str(tmp_path / "cube.nc"), "--horizons", str(tmp_path / "h.nc"),
                "--out", str(tmp_path / "horizons.png")])
    assert (tmp_path / "horizons.png").stat().st_size > 10_000


@pytest.mark.parametrize("optimizer, lr", [("sgd", 6e-3), ("adam", 6e-4)])
def test_a_run_to_s_is_the_first_s_steps_of_a_longer_run(tmp_path, optimizer, lr):
    """What the readout rests on: with a constant learning rate, training to S and training longer agree at S."""
    x = np.random.default_rng(0).normal(size=(24, 8)).astype(np.float32)
    xt = np.random.default_rng(1).normal(size=(12, 8)).astype(np.float32)
    model = ModelConfig(arch="time_mlp", width=16, depth=3, parameterization="ddpm")

    def train(state_dir, max_steps):
        cfg = TrainConfig(optimizer=optimizer, momentum=0.95, lr=lr, batch_size=64, max_steps=max_steps,
                          checkpoints_per_decade=6, probe_size=16, log_every=10**6)
        return run_training(x, xt, model_cfg=model, train_cfg=cfg, seed=0, state_dir=state_dir, data_shape=(8,),
                            device=torch.device("cpu"), log=lambda m: None)

    short, long = train(tmp_path / "short", 46), train(tmp_path / "long", 100)
    assert 46 in checkpoint_grid({"max_steps": 100, "checkpoints_per_decade": 6, "checkpoint_steps": None})
    ws = load_checkpoint(checkpoint_path(tmp_path / "short", 46))["model"]
    wl = load_checkpoint(checkpoint_path(tmp_path / "long", 46))["model"]
    assert ws.keys() == wl.keys()
    for key in ws:
        assert torch.equal(ws[key], wl[key]), key
    assert short[46] == long[46]
