"""The one-step least-squares denoiser (Halder & Pehlevan) and the linear_exact stage."""

import math

import numpy as np
import pytest
import xarray as xr
from test_figures import assert_curves, bars, legend, xy

from diffmem import names
from diffmem.config import FitConfig, ModelConfig, SampleConfig
from diffmem.families.one_step import default_l, fit_one_step, one_step_generated, one_step_noise
from diffmem.figures import linear_exact as linear_exact_figures
from diffmem.metrics.l2 import halder_width, l2_kde_gaussian
from diffmem.stages import linear_exact as le


def test_fit_equals_least_squares_with_intercept_when_determined():
    rng = np.random.default_rng(0)
    n, d = 40, 5
    x = rng.standard_normal((n, d)) + 3.0
    y = one_step_noise(x, rng.standard_normal((n, d)), time=2.0)
    fit = fit_one_step(x, y)
    design = np.hstack([np.ones((n, 1)), y])  # [n, d + 1]
    coef, *_ = np.linalg.lstsq(design, x, rcond=None)
    np.testing.assert_allclose(fit.beta0, coef[0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(fit.beta1, coef[1:].T, rtol=1e-10, atol=1e-10)
    # the normal equations hold: residuals orthogonal to the design
    resid = x - fit.beta0 - y @ fit.beta1.T
    np.testing.assert_allclose(design.T @ resid, 0.0, atol=1e-9)


def test_underdetermined_fit_is_minimum_norm_and_interpolates():
    rng = np.random.default_rng(1)
    n, d = 4, 10  # n <= d + 1
    x = rng.standard_normal((n, d))
    y = rng.standard_normal((n, d))
    fit = fit_one_step(x, y)
    np.testing.assert_allclose(fit.beta0 + y @ fit.beta1.T, x, atol=1e-10)  # interpolates the pairs
    yc = y - y.mean(0)
    np.testing.assert_allclose(fit.beta1, (np.linalg.pinv(yc) @ (x - x.mean(0))).T, atol=1e-10)
    # any other interpolating beta1 (add a direction orthogonal to the centred y's) has a larger norm
    null = np.linalg.svd(yc)[2][-1]  # [d], yc @ null = 0
    other = fit.beta1 + np.outer(rng.standard_normal(d), null)
    assert np.linalg.norm(other) > np.linalg.norm(fit.beta1)


def test_generated_gaussian_matches_sampling_the_closed_form_generator():
    rng = np.random.default_rng(2)
    n, d, t = 30, 3, 2.0
    x = rng.standard_normal((n, d))
    fit = fit_one_step(x, one_step_noise(x, rng.standard_normal((n, d)), time=t))
    mean, cov = one_step_generated(fit, x, time=t)
    s2 = math.exp(-2 * t) * x.var(0, ddof=1).mean() + default_l(t) * -math.expm1(-2 * t)
    z = math.exp(-t) * x.mean(0) + math.sqrt(s2) * rng.standard_normal((200_000, d))
    samples = fit.beta0 + z @ fit.beta1.T
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.02 * math.sqrt(cov.diagonal().max()) + 1e-3)
    np.testing.assert_allclose(np.cov(samples.T), cov, rtol=0.03, atol=0.02 * cov.diagonal().max())
    np.testing.assert_allclose(cov, cov.T)


def _model(variant="one_step"):
    return ModelConfig(family="linear_exact", linear_variant=variant)


def test_evaluate_dim_is_deterministic_and_separates_memorization_from_generalization():
    kwargs = dict(dim=4, psi_n=(0.5, 1.0, 16.0), seeds=(0,), repeats=12, sample=SampleConfig(), num_population=400,
                  log=lambda m: None)
    ds = le.evaluate_dim(model=_model(), **kwargs)
    assert ds[names.DELTA].dims == (names.NUM_POPULATION, names.PSI_N, names.SEED) and ds.sizes[names.SEED] == 12
    assert ds[names.NUM_POPULATION].values.tolist() == [400]
    assert ds[names.N].values.tolist() == [2, 4, 64]
    xr.testing.assert_identical(ds, le.evaluate_dim(model=_model(), **kwargs))
    p = le.p_delta(ds[names.DELTA].sel({names.NUM_POPULATION: 400}).values)
    # a handful of points: rho_G hugs the training set (E_TG < E_OG); many points: it generalizes
    assert p[0] < 0.3 and p[-1] > 0.5
    assert ds[names.DELTA_ORACLE].dims == ds[names.DELTA].dims and np.isfinite(ds[names.DELTA_ORACLE].values).all()
    affine = le.evaluate_dim(model=_model("affine"), **kwargs)
    assert np.all(np.isfinite(affine[names.DELTA].values))


def test_several_population_sizes_share_the_training_sets_and_nest_the_populations():
    """E_TG does not depend on N (the same training sets and models); the smallest N's E_OG equals a run with
    that N alone only where the population draw is the same (one N = the old single-population layout), and
    the oracle's E_TG - E_OG equals a direct evaluation with rho_G = N(0, I)."""
    kwargs = dict(dim=3, psi_n=(1.0, 4.0), seeds=(0,), repeats=3, sample=SampleConfig(), log=lambda m: None)
    both = le.evaluate_dim(model=_model(), num_population=(50, 300), **kwargs)
    alone = le.evaluate_dim(model=_model(), num_population=300, **kwargs)
    np.testing.assert_array_equal(both[names.E_TG].values, alone[names.E_TG].values)
    np.testing.assert_array_equal(both[names.E_OG].sel({names.NUM_POPULATION: 300}).values,
                                  alone[names.E_OG].sel({names.NUM_POPULATION: 300}).values)
    assert not np.allclose(both[names.E_OG].sel({names.NUM_POPULATION: 50}).values,
                           both[names.E_OG].sel({names.NUM_POPULATION: 300}).values)
    # the oracle, by hand for the first repeat and n: the same draws as evaluate_dim makes
    rng = np.random.default_rng([0, 0, 3, le._STREAM])
    pop = rng.standard_normal((300, 3))
    train = rng.standard_normal((3, 3))
    eye, zero = np.eye(3), np.zeros(3)
    e_tg = l2_kde_gaussian(train, eps=halder_width(3, 3), mean=zero, cov=eye)["e_offdiag"]
    e_og = l2_kde_gaussian(pop[:50], eps=halder_width(50, 3), mean=zero, cov=eye)["e_offdiag"]
    assert float(both[names.DELTA_ORACLE].sel({names.NUM_POPULATION: 50}).isel({names.PSI_N: 0, names.SEED: 0})) \
        == pytest.approx(e_tg - e_og, rel=1e-10)
    fit = le.fit_transition(le.combine_dims([both], attrs={}), fit=FitConfig(num_bootstrap=20),
                            rng=np.random.default_rng(0))
    assert fit[names.N_HALF].dims == (names.NUM_POPULATION, names.DIM)
    assert fit[names.P_DELTA_POS_ORACLE].dims == (names.NUM_POPULATION, names.DIM, names.PSI_N)


def test_a_cube_from_before_the_population_dimension_still_fits():
    ds = le.evaluate_dim(model=_model(), dim=3, psi_n=(1.0, 4.0), seeds=(0,), repeats=4, sample=SampleConfig(),
                         num_population=100, log=lambda m: None)
    old = ds.drop_vars([names.DELTA_ORACLE, "eps_population"]).isel({names.NUM_POPULATION: 0}, drop=True)
    old.attrs["num_population"] = 100
    fit = le.fit_transition(le.combine_dims([old], attrs={}), fit=FitConfig(num_bootstrap=20),
                            rng=np.random.default_rng(0))
    assert fit[names.NUM_POPULATION].values.tolist() == [100] and names.P_DELTA_POS_ORACLE not in fit


def check_linear_exact_figures(figs: dict, cube: xr.Dataset, fit: xr.Dataset) -> None:
    """P(Delta > 0) against n/d per d, one panel per population size N (the oracle dashed); n_half (and
    n_half / d) against d with the power-law fit, one series per N; the median E_TG and E_OG and mean / sd of
    Delta against n/d per d at the largest N."""
    dims = fit[names.DIM].values
    pops = fit[names.NUM_POPULATION].values
    axes = figs["p_delta_vs_psi_n.png"].axes
    assert len(axes) == pops.size
    for ax, size in zip(axes, pops):
        sel = fit.sel({names.NUM_POPULATION: size})
        assert_curves(bars(ax), [(sel.sel({names.DIM: d})[names.PSI_N].values,
                                  sel[names.P_DELTA_POS].sel({names.DIM: d}).values) for d in dims])
        assert [t for t in legend(ax) if t.startswith("d = ")] == [f"d = {int(d)}" for d in dims]
        if names.P_DELTA_POS_ORACLE in fit:
            dashed = [line for line in ax.lines if line.get_linestyle() == "--" and len(line.get_xdata())]
            assert_curves(dashed, [(sel[names.PSI_N].values, sel[names.P_DELTA_POS_ORACLE].sel({names.DIM: d}).values)
                                   for d in dims])
    ax, ax2 = figs["n_half_vs_d.png"].axes
    for j, size in enumerate(pops):
        sel = fit.sel({names.NUM_POPULATION: size})
        half, ok = sel[names.N_HALF].values, ~sel["n_half_censored"].values.astype(bool)
        np.testing.assert_allclose(np.column_stack(xy(bars(ax)[j])), np.column_stack([dims[ok], half[ok]]))
        np.testing.assert_allclose(xy(bars(ax2)[j])[1], half[ok] / dims[ok])
        b, a = float(sel["n_half_exponent"]), float(sel["n_half_prefactor"])
        fits = [line for line in ax.lines if f"power-law fit d^{b:.2f} [" in line.get_label()]
        assert len(fits) == int(np.isfinite(b))
        for line in fits:
            x, y = xy(line)
            np.testing.assert_allclose(y, a * x**b)
    ax, ax2 = figs["e_tg_e_og.png"].axes
    if names.NUM_POPULATION in cube.dims:
        cube = cube.sel({names.NUM_POPULATION: cube[names.NUM_POPULATION].max()})
    expected = []
    for d in cube[names.DIM].values:
        sel = cube.sel({names.DIM: d})
        expected += [(sel[names.PSI_N].values, sel[key].median(names.SEED).values) for key in (names.E_TG, names.E_OG)]
    assert_curves([line for line in ax.lines if len(line.get_xdata())], expected)
    assert_curves(bars(ax2), [(cube.sel({names.DIM: d})[names.PSI_N].values,
                               (cube[names.DELTA].sel({names.DIM: d}).mean(names.SEED)
                                / cube[names.DELTA].sel({names.DIM: d}).std(names.SEED)).values)
                              for d in cube[names.DIM].values])


def test_fit_recovers_a_planted_linear_crossing_and_plots(tmp_path, drawn):
    rng = np.random.default_rng(3)
    dims, psi = [8, 16, 32, 64], np.array([0.25, 0.5, 1, 2, 4, 8])
    parts = []
    for d in dims:
        n = np.round(psi * d).astype(int)
        # P(Delta > 0) rises through 1/2 at n = 2 d: Delta = log(n / 2d) + noise
        delta = np.log(n / (2.0 * d))[:, None] + 0.3 * rng.standard_normal((psi.size, 400))
        parts.append(xr.Dataset({names.DELTA: ((names.PSI_N, names.SEED), delta),
                                 names.E_TG: ((names.PSI_N, names.SEED), delta), names.E_OG: ((names.PSI_N, names.SEED), 0 * delta)},
                                coords={names.PSI_N: psi, names.SEED: np.arange(400), names.N: ((names.PSI_N,), n), names.DIM: d}))
    cube = le.combine_dims(parts, attrs={"experiment": "planted"})
    fit = le.fit_transition(cube, fit=FitConfig(num_bootstrap=200), rng=np.random.default_rng(0))
    one = fit.isel({names.NUM_POPULATION: 0})  # a cube without population sizes: one (unknown) N
    np.testing.assert_allclose(one[names.N_HALF].values, 2.0 * np.array(dims), rtol=0.1)
    b = float(one["n_half_exponent"])
    lo, hi = one["n_half_exponent_ci"].values
    assert abs(b - 1.0) < 0.05 and lo <= 1.0 <= hi and hi - lo < 0.2
    figs = drawn.watch(linear_exact_figures)
    paths = le.make_linear_exact_figures(cube, fit, tmp_path, title="planted")
    assert [p.name for p in paths] == list(figs) == ["p_delta_vs_psi_n.png", "n_half_vs_d.png", "e_tg_e_og.png",
                                                     "kl_generated.png"]
    check_linear_exact_figures(figs, cube, fit)
    # a d whose P(Delta > 0) starts above 1/2 is censored, not read as a crossing at the first n
    flipped = cube.copy(deep=True)
    flipped[names.DELTA].loc[{names.DIM: 8}] = np.abs(flipped[names.DELTA].sel({names.DIM: 8})) + 1.0
    cens = le.fit_transition(flipped, fit=FitConfig(num_bootstrap=50), rng=np.random.default_rng(0))
    cens = cens.isel({names.NUM_POPULATION: 0})
    assert np.isnan(float(cens[names.N_HALF].sel({names.DIM: 8}))) and int(cens["n_half_censored"].sel({names.DIM: 8})) == 1


def test_the_generated_gaussians_kl_is_infinite_up_to_n_equals_d_then_falls():
    """Rank: the generated covariance has rank <= n - 1, so KL(generated || population) is +inf for n <= d;
    above, it is finite and falls with n (Halder & Pehlevan's 'fall phase begins at n = d')."""
    dim = 6
    ds = le.evaluate_dim(model=_model(), dim=dim, psi_n=(0.5, 1.0, 2.0, 4.0, 16.0), seeds=(0,), repeats=8,
                         sample=SampleConfig(), num_population=200, log=lambda m: None)
    kl = ds[names.KL_GENERATED].median(names.SEED).values
    n = ds[names.N].values
    assert np.all(np.isinf(kl[n <= dim])) and np.all(np.isfinite(kl[n > dim]))
    above = kl[n > dim]
    assert np.all(np.diff(above) < 0) and above[-1] > 0
