"""The random-features gap split by modes of U (issue 22): A restricted to U's top-n eigenvectors (the
theory's memorization bulk) and to the rest, the split time of each part's gap, and panel (d) of rf_compare.png."""

import math
from dataclasses import replace as dataclass_replace

import numpy as np
import torch
import xarray as xr
from test_figures import legend

from diffmem import names
from diffmem.config import FitConfig, ModelConfig, TrainConfig
from diffmem.cube import combine_runs, load_parts
from diffmem.families import random_features as family
from diffmem.io import atomic_to_netcdf
from diffmem.stages import rf

MODEL = ModelConfig(family="random_features", psi_p=64.0, rf_time=0.1, rf_num_noise=0, rf_solver="flow")


def _orthogonal(p: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(p, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def _mean_loss(a, w, x_noisy, xi, dt) -> float:
    return float(family.rf_loss(a, w, x_noisy, xi, dt).mean())


def _cross(a_bulk, a_out, w, x_noisy, dt) -> float:
    """(2 Delta_t / d) mean_rows <s_bulk, s_outside>: the cross term of the quadratic loss."""
    s_b, s_o = family.rf_score(a_bulk, w, x_noisy), family.rf_score(a_out, w, x_noisy)
    return float(2.0 * dt / w.shape[1] * (s_b * s_o).sum(1).mean())


def test_split_by_modes_returns_planted_parts_and_the_loss_splits_into_parts_plus_a_cross_term():
    d, p, k, t = 5, 24, 7, 0.1
    g = torch.Generator().manual_seed(0)
    q = _orthogonal(p, 1)  # the eigenvectors of some U, ascending
    q_bulk, q_out = family.top_modes(q, k), q[:, : p - k]
    assert q_bulk.shape == (p, k) and torch.equal(q_bulk, q[:, p - k:])
    assert family.top_modes(q, 2 * p).shape == (p, p) and family.top_modes(q, 0).shape == (p, 0)
    b1, b2 = torch.randn(d, k, generator=g, dtype=torch.float64), torch.randn(d, p - k, generator=g, dtype=torch.float64)
    a_bulk, a_out = b1 @ q_bulk.T, b2 @ q_out.T  # planted: A's part in the bulk span and in its complement
    got_bulk, got_out = family.split_by_modes(a_bulk + a_out, q_bulk)
    torch.testing.assert_close(got_bulk, a_bulk, rtol=0, atol=1e-12)
    torch.testing.assert_close(got_out, a_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(got_bulk @ got_out.T, torch.zeros(d, d, dtype=torch.float64), rtol=0, atol=1e-12)
    # the loss of any A is the parts' losses, less the loss at A = 0, plus the cross term
    w = torch.randn(p, d, generator=g, dtype=torch.float64)
    x = torch.randn(300, d, generator=g, dtype=torch.float64)
    xi = torch.randn(300, d, generator=g, dtype=torch.float64)
    dt, x_t = family.delta(t), family.noised(x, xi, t)
    a = a_bulk + a_out
    zero = torch.zeros_like(a)
    parts = _mean_loss(a_bulk, w, x_t, xi, dt) + _mean_loss(a_out, w, x_t, xi, dt) - _mean_loss(zero, w, x_t, xi, dt)
    cross = _cross(a_bulk, a_out, w, x_t, dt)
    assert abs(cross) > 1e-3  # a real check: the rows' Gram does not commute with this projection
    assert math.isclose(_mean_loss(a, w, x_t, xi, dt), parts + cross, rel_tol=1e-12)
    # U = the rows' own Gram (as the noise-averaged U for the training loss): the cross term vanishes and the
    # losses add up exactly, the bulk's and the rest's contributions known in closed form
    phi = family.rf_features(w, x_t)
    _, q_gram = torch.linalg.eigh(phi.T @ phi / phi.shape[0])
    g_bulk, g_out = family.split_by_modes(a, family.top_modes(q_gram, k))
    assert abs(_cross(g_bulk, g_out, w, x_t, dt)) < 1e-12
    assert math.isclose(_mean_loss(a, w, x_t, xi, dt), _mean_loss(g_bulk, w, x_t, xi, dt) +
                        _mean_loss(g_out, w, x_t, xi, dt) - _mean_loss(zero, w, x_t, xi, dt), rel_tol=1e-12)


def test_the_flow_records_the_losses_of_a_restricted_to_the_bulk_and_to_the_rest():
    d, n, p, t, seed = 4, 10, 32, 0.1, 5
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_test = torch.randn(40, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    taus = np.array([0.0, 10.0, 1e3, 1e6])
    res = family.rf_gradient_flow(x, x_test, p=p, t=t, taus=taus, generator=torch.Generator().manual_seed(seed),
                                  num_eval_noise=3, bulk_size=n)
    plain = family.rf_gradient_flow(x, x_test, p=p, t=t, taus=taus, generator=torch.Generator().manual_seed(seed),
                                    num_eval_noise=3)
    for key in ("train_loss", "test_loss", "score_error", "eigvals", "A"):  # the split changes nothing else
        np.testing.assert_array_equal(res[key], plain[key])
    for key in ("train_loss", "test_loss"):  # A = 0 at tau = 0: every part's loss is the loss at 0
        for part in family.MODE_PARTS:
            assert res[f"{key}_{part}"].shape == taus.shape
            assert res[f"{key}_{part}"][0] == res[key][0]
    # at the last tau: the recorded parts are A Q Q^T and A - A Q Q^T for U's top n eigenvectors Q, on the
    # run's own evaluation points (W first, then the evaluation noise, from the run's generator)
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(p, d, generator=gen, dtype=torch.float64)
    n_eval = 3
    xi_tr = torch.randn(n * n_eval, d, generator=gen, dtype=torch.float64)
    xi_te = torch.randn(40 * n_eval, d, generator=gen, dtype=torch.float64)
    u, _ = family.noise_averaged_moments(x, w, t=t)
    a_bulk, a_out = family.split_by_modes(torch.as_tensor(res["A"]), family.top_modes(torch.linalg.eigh(u)[1], n))
    dt = family.delta(t)
    for key, pts, xi in (("train_loss", x.repeat(n_eval, 1), xi_tr), ("test_loss", x_test.repeat(n_eval, 1), xi_te)):
        x_t = family.noised(pts, xi, t)
        bulk, out = _mean_loss(a_bulk, w, x_t, xi, dt), _mean_loss(a_out, w, x_t, xi, dt)
        assert math.isclose(res[f"{key}_bulk"][-1], bulk, rel_tol=1e-9)
        assert math.isclose(res[f"{key}_outside"][-1], out, rel_tol=1e-9)
        total = bulk + out - res[key][0] + _cross(a_bulk, a_out, w, x_t, dt)
        assert math.isclose(res[key][-1], total, rel_tol=1e-9)
    # n >= p: the bulk is every mode, nothing is outside
    x_big = torch.randn(40, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    full = family.rf_gradient_flow(x_big, x_test, p=p, t=t, taus=taus, generator=torch.Generator().manual_seed(seed),
                                   num_eval_noise=1, bulk_size=40)
    np.testing.assert_allclose(full["test_loss_bulk"], full["test_loss"], rtol=1e-12)
    np.testing.assert_allclose(full["test_loss_outside"], full["test_loss"][0], rtol=1e-12)


def test_gradient_descent_records_the_split_without_changing_its_trajectory():
    d, n, t = 4, 8, 0.1
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_test = torch.randn(30, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kw = {"p": 16, "t": t, "lr": 16.0, "num_steps": 50, "record_steps": [0, 10, 50], "num_eval_noise": 2}
    split = family.train_random_features(x, x_test, generator=torch.Generator().manual_seed(0), bulk_size=n, **kw)
    plain = family.train_random_features(x, x_test, generator=torch.Generator().manual_seed(0), **kw)
    for key in ("train_loss", "test_loss", "A"):
        np.testing.assert_array_equal(split[key], plain[key])
    u, _ = family.noise_averaged_moments(x, torch.as_tensor(split["W"]), t=t)  # the noise-averaged U's modes
    a_bulk, _ = family.split_by_modes(torch.as_tensor(split["A"]), family.top_modes(torch.linalg.eigh(u)[1], n))
    assert split["train_loss_bulk"][0] == split["train_loss"][0]
    assert split["train_loss_bulk"][-1] != split["train_loss"][-1]
    assert float(a_bulk.norm()) > 0


def _planted_mode_cube(*, d=8, seeds=3, with_split=True):
    """A cube whose bulk gap rises on tau_b = 3 n (1 + 0.1 seed), the outside gap on 2e4 whatever n, and the
    whole gap is their sum (train losses flat at 0.5)."""
    steps = np.concatenate([[0], np.unique(np.round(np.geomspace(1, 1e8, 160)).astype(np.int64))])
    tau = steps / d**2  # lr = 1
    parts = []
    for n in (32, 64, 128, 256):
        for s in range(seeds):
            bulk = (4.0 / n) * -np.expm1(-tau / (3.0 * n * (1 + 0.1 * s)))
            out = 0.2 * -np.expm1(-tau / 2e4)
            flat = np.full(tau.size, 0.5)
            data = {names.TRAIN_LOSS: (names.STEP, flat), names.TEST_LOSS: (names.STEP, 0.5 + bulk + out),
                    names.SCORE_ERROR: (names.STEP, np.exp(-tau))}
            if with_split:
                data.update({names.TRAIN_LOSS_BULK: (names.STEP, flat), names.TEST_LOSS_BULK: (names.STEP, 0.5 + bulk),
                             names.TRAIN_LOSS_OUTSIDE: (names.STEP, flat),
                             names.TEST_LOSS_OUTSIDE: (names.STEP, 0.5 + out)})
            parts.append(xr.Dataset(data, coords={names.STEP: steps, names.TAU: (names.STEP, tau), names.N: n,
                                                  names.SEED: s, names.DIM: d}))
    return combine_runs(parts, attrs={"experiment": "planted modes"})


def test_rf_fit_reads_the_bulk_only_half_gap_time_and_its_exponent():
    cube = _planted_mode_cube()
    fit = rf.rf_fit(cube, model=MODEL, fit=FitConfig(num_bootstrap=100), rng=np.random.default_rng(0))
    ns = (32, 64, 128, 256)
    expect = np.array([[3.0 * n * (1 + 0.1 * s) * math.log(2) for s in range(3)] for n in ns])
    np.testing.assert_allclose(fit[names.TAU_SPLIT_BULK].transpose(names.N, names.SEED).values, expect, rtol=1e-2)
    np.testing.assert_allclose(fit[names.TAU_SPLIT_OUTSIDE].values, 2e4 * math.log(2), rtol=1e-2)
    assert math.isclose(float(fit[f"{names.TAU_SPLIT_BULK}_exponent"]), 1.0, abs_tol=0.01)
    assert abs(float(fit[f"{names.TAU_SPLIT_OUTSIDE}_exponent"])) < 0.01
    lo, hi = fit[f"{names.TAU_SPLIT_BULK}_{names.EXPONENT_CI_SEEDS}"].values
    assert lo <= 1.01 and hi >= 0.99
    # the whole gap mixes the two: its exponent lies well below the bulk's
    assert float(fit[f"{names.TAU_SPLIT}_exponent"]) < 0.8
    final = fit["gap_final"].transpose(names.N, names.SEED).values
    bulk = fit["gap_final_bulk"].transpose(names.N, names.SEED).values
    np.testing.assert_allclose(bulk, np.array([[4.0 / n] * 3 for n in ns]), rtol=1e-6)
    np.testing.assert_allclose(final, bulk + fit["gap_final_outside"].transpose(names.N, names.SEED).values, rtol=1e-12)
    np.testing.assert_allclose(fit["gap_settled_bulk"].values, 1.0, atol=1e-6)
    for var in fit.data_vars:
        assert fit[var].attrs.get("long_name") and fit[var].attrs.get("units"), var
    assert "U's top n eigenvectors" in fit[names.TAU_SPLIT_BULK].attrs["long_name"]
    # two seeds: no bootstrap CI for the parts either
    two = rf.rf_fit(cube.isel({names.SEED: slice(0, 2)}), model=MODEL, fit=FitConfig(num_bootstrap=20),
                    rng=np.random.default_rng(0))
    assert np.isnan(two[f"{names.TAU_SPLIT_BULK}_exponent_ci"].values).all()
    # a cube written before the mode split still fits, without the parts
    old = rf.rf_fit(_planted_mode_cube(with_split=False), model=MODEL, fit=FitConfig(num_bootstrap=20),
                    rng=np.random.default_rng(0))
    assert names.TAU_SPLIT_BULK not in old and "gap_final" not in old and names.TAU_SPLIT in old


def test_rf_run_writes_the_mode_split_with_units_and_definitions():
    d = 4
    model = dataclass_replace(MODEL, psi_p=4.0)
    train = TrainConfig(lr=d**2, max_steps=1000, checkpoints_per_decade=2)
    x = np.random.default_rng(0).standard_normal((8, d))
    ds = rf.rf_run(x, np.random.default_rng(1).standard_normal((20, d)), model=model, train=train, seed=0,
                   log=lambda s: None)
    for var in (names.TRAIN_LOSS_BULK, names.TEST_LOSS_BULK, names.TRAIN_LOSS_OUTSIDE, names.TEST_LOSS_OUTSIDE):
        assert ds[var].dims == (names.STEP,) and ds[var].attrs["units"] == "1"
        assert "restricted to" in ds[var].attrs["long_name"] and "eigenvectors" in ds[var].attrs["long_name"]
    assert "top n" in ds[names.TEST_LOSS_BULK].attrs["long_name"]
    assert "p - n" in ds[names.TEST_LOSS_OUTSIDE].attrs["long_name"]


def test_compare_draws_the_bulk_only_exponent_and_notes_cubes_without_the_split(tmp_path, drawn):
    from diffmem.figures import rf_compare
    cube = _planted_mode_cube()
    fit = rf.rf_fit(cube, model=MODEL, fit=FitConfig(num_bootstrap=50), rng=np.random.default_rng(0))
    old_cube = _planted_mode_cube(with_split=False)
    old = rf.rf_fit(old_cube, model=MODEL, fit=FitConfig(num_bootstrap=20), rng=np.random.default_rng(0))
    figs = drawn.watch(rf_compare)
    rf_compare.make_rf_compare([("new", fit), ("old", old)], [cube, old_cube], tmp_path / "cmp.png")
    fig = figs["cmp.png"]
    assert len(fig.axes) == 3  # no spectrum: split, levels, modes
    ax = fig.axes[2]
    assert ax.get_title().startswith("(d)")
    line = next(ln for ln in ax.lines if ln.get_label().startswith("new:"))
    b = [float(fit[f"{prefix}_exponent"]) for prefix in (names.TAU_SPLIT, names.TAU_SPLIT_BULK, names.TAU_SPLIT_OUTSIDE)]
    np.testing.assert_allclose(line.get_ydata(), b)
    assert line.get_ydata()[1] > 0.99  # the planted bulk's exponent
    labels = legend(ax)
    assert "old: no mode split in its cube" in labels
    theory = float(fit[f"{names.TAU_MEM_THEORY}_exponent"])
    assert any(lab.startswith("theory tau_mem") for lab in labels)
    assert any(np.allclose(ln.get_ydata(), theory) for ln in ax.lines if ln.get_label().startswith("theory tau_mem"))
    # only old cubes: the panel is left out and a note says why
    figs = drawn.watch(rf_compare)
    rf_compare.make_rf_compare([("old", old)], [old_cube], tmp_path / "old.png")
    assert len(figs["old.png"].axes) == 2
    assert any("no panel (d)" in text.get_text() for text in figs["old.png"].texts)
    atomic_to_netcdf(fit, tmp_path / "fit.nc")  # the fit with the parts survives a NetCDF round trip
    (back,) = load_parts([str(tmp_path / "fit.nc")])
    xr.testing.assert_identical(back, fit)
