"""What each figure of diffmem.figures shows, read back off the matplotlib Figure it saved (the `drawn`
fixture): the plotted arrays equal the cube's and fit's numbers, one curve per n, the legend names them.

The `check_*` functions are also run by the workflow tests on the figures of a finished run (redrawn
here from its cube.nc and fit.nc, and compared pixel for pixel with the workflow's PNG files).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from matplotlib.container import ErrorbarContainer

from diffmem import names
from diffmem.config import FitConfig
from diffmem.figures import experiment, sweep
from diffmem.fitfile import write_fit
from diffmem.onsets import fit_onsets, pick_quality_metric
from diffmem.stages import plot as plot_stage
from diffmem.stages.sweep import combine_sweep, width_collapse

N = np.array([32, 64, 128])
STEPS = np.array([0, 1, 3, 10, 32, 100, 316, 1000, 3162, 10000])
METRIC = "fd_data"


# ---- reading a figure back


def curves(ax) -> list:
    """The lines drawn in data coordinates (not seaborn's empty legend entries, not axhline / axvline)."""
    return [line for line in ax.lines if len(line.get_xdata()) and line.get_transform() == ax.transData]


def bars(ax) -> list:
    """The data line of each errorbar, in drawing order."""
    return [c.lines[0] for c in ax.containers if isinstance(c, ErrorbarContainer)]


def xy(line) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)


def legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def hlines(ax) -> list[float]:
    """The y of every horizontal line across the axes (axhline)."""
    return [float(line.get_ydata()[0]) for line in ax.lines if line.get_transform() == ax.get_yaxis_transform()]


def assert_curves(lines, expected) -> None:
    """`lines` draw exactly the `expected` (x, y) curves, in any order."""
    got = [xy(line) for line in lines]
    assert len(got) == len(expected), f"{len(got)} curves drawn, {len(expected)} expected"
    for x, y in expected:
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        hits = [i for i, (gx, gy) in enumerate(got)  # relative: f_mem can be 1e-10
                if gx.shape == x.shape and np.allclose(gx, x, rtol=1e-9, atol=0)
                and np.allclose(gy, y, rtol=1e-9, atol=0, equal_nan=True)]
        assert hits, f"curve x={x}, y={y} not drawn; drawn: {got}"
        got.pop(hits[0])  # a curve expected twice must be drawn twice


def assert_points(offsets, x, y) -> None:
    """A scatter's points are the (x, y) pairs, in any order."""
    got = sorted(map(tuple, np.asarray(offsets, dtype=float)))
    want = sorted(zip(np.asarray(x, dtype=float), np.asarray(y, dtype=float)))
    assert len(got) == len(want)
    np.testing.assert_allclose(got, want)


def seed_means(da: xr.DataArray, n) -> tuple[np.ndarray, np.ndarray]:
    """(step, mean over seeds) of one n at the positive steps where any seed has a value (seaborn's curve)."""
    steps = da[names.STEP].values
    mean = da.sel({names.N: n}).mean(names.SEED).values
    keep = (steps > 0) & np.isfinite(mean)
    return steps[keep], mean[keep]


def geometric_mean(tau: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """(n, geometric mean over seeds) of the n with any finite tau."""
    with np.errstate(all="ignore"):
        g = np.exp(np.nanmean(np.log(tau.transpose(names.N, names.SEED).values), axis=1))
    ok = np.isfinite(g)
    return tau[names.N].values[ok], g[ok]


# ---- what each figure must show


def check_f_mem(ax, cube: xr.Dataset, *, over_n: bool = False) -> None:
    """One curve per n: the mean over seeds of f_mem against step (or step / n); the legend lists n."""
    expected = []
    for n in cube[names.N].values:
        x, y = seed_means(cube[names.F_MEM], n)
        expected.append((x / n if over_n else x, y))
    assert_curves(curves(ax), expected)
    assert legend(ax) == [str(n) for n in cube[names.N].values]


def check_tau(ax, fit: xr.Dataset) -> None:
    """The points are fit.tau_mem (n, seed), the black dashes their geometric mean per n, the dashed line
    tau = a n^b with the fit's a and b, and the legend gives b and its CI."""
    tau = fit[names.TAU_MEM].transpose(names.N, names.SEED)
    n_of = np.broadcast_to(tau[names.N].values[:, None], tau.shape)
    ok = np.isfinite(tau.values)
    if not ok.any():
        assert [t.get_text() for t in ax.texts] == ["tau_mem not reached for any n"] and not ax.lines
        return
    assert_points(ax.collections[0].get_offsets(), n_of[ok], tau.values[ok])
    lines = {line.get_label(): line for line in ax.lines}
    np.testing.assert_allclose(np.column_stack(xy(lines["geometric mean"])), np.column_stack(geometric_mean(tau)))
    b, a = float(fit[names.TAU_MEM_EXPONENT]), float(fit[names.TAU_MEM_PREFACTOR])
    lo, hi = fit[names.TAU_MEM_EXPONENT_CI].values
    fit_lines = [k for k in lines if k.startswith("fit: ")]
    assert len(fit_lines) == int(np.isfinite(b))  # no line without a fitted exponent
    if fit_lines:
        assert fit_lines[0].startswith(f"fit: b = {b:.2f} [{lo:.2f}, {hi:.2f}]")
        x, y = xy(lines[fit_lines[0]])
        np.testing.assert_allclose(y, a * x**b)
    assert [t for t in legend(ax) if t.startswith("seed ")] == [f"seed {s}" for s in fit[names.SEED].values
                                                               if np.isfinite(fit[names.TAU_MEM].sel({names.SEED: s})).any()]


def check_losses(ax, cube: xr.Dataset) -> None:
    """Two curves per n (train and test probe loss, mean over seeds)."""
    expected = [seed_means(cube[var], n) for n in cube[names.N].values for var in (names.TRAIN_LOSS, names.TEST_LOSS)]
    assert_curves(curves(ax), expected)
    assert legend(ax) == ["n", *map(str, cube[names.N].values), "probe", names.TRAIN_LOSS, names.TEST_LOSS]


def check_local_slopes(ax, fit: xr.Dataset) -> None:
    """tau_mem's local slopes at the geometric middle of consecutive n, and the global exponent as a line."""
    slopes = fit[names.TAU_MEM_LOCAL_SLOPE]
    mid = np.sqrt(slopes[names.N_LO].values * slopes[names.N_HI].values)
    x, y = xy(bars(ax)[0])
    np.testing.assert_allclose(x, mid)
    np.testing.assert_allclose(y, slopes.values, equal_nan=True)
    np.testing.assert_allclose(hlines(ax)[0], float(fit[names.TAU_MEM_EXPONENT]))  # NaN too, when no fit


def check_level_exponents(ax, fit: xr.Dataset) -> None:
    """The exponent at each level of f_mem, raw and normalized, one errorbar series each."""
    exp = fit[f"{names.TAU_MEM_LEVELS}_exponent"]
    series = [xy(line) for line in bars(ax)]
    assert len(series) >= exp.sizes[names.NORMALIZATION]
    for (x, y), norm in zip(series, exp[names.NORMALIZATION].values):
        np.testing.assert_allclose(y, exp.sel({names.NORMALIZATION: norm}).values, equal_nan=True)
        ratio = x / exp[names.LEVEL].values  # at the levels, each series shifted by a constant factor
        np.testing.assert_allclose(ratio, ratio[0])


def check_experiment_figures(figs: dict, cube: xr.Dataset, fit: xr.Dataset, *, only=None) -> None:
    """make_figures: the four single panels, the overview (the same four) and scaling.png."""
    single = {
        "f_mem_vs_step.png": lambda ax: check_f_mem(ax, cube),
        "f_mem_vs_step_over_n.png": lambda ax: check_f_mem(ax, cube, over_n=True),
        "tau_mem_vs_n.png": lambda ax: check_tau(ax, fit),
        "losses.png": lambda ax: check_losses(ax, cube),
    }
    for name, check in single.items():
        if only is None or name in only:
            assert len(figs[name].axes) == 1
            check(figs[name].axes[0])
    if only is None or "overview.png" in only:
        axes = figs["overview.png"].axes
        assert len(axes) == 4
        for ax, check in zip(axes, single.values()):
            check(ax)
    if only is None or "scaling.png" in only:
        axes = figs["scaling.png"].axes
        check_tau(axes[0], fit)
        for ax, var, check in ((axes[1], names.TAU_MEM_LOCAL_SLOPE, check_local_slopes),
                               (axes[2], f"{names.TAU_MEM_LEVELS}_exponent", check_level_exponents)):
            if var in fit and np.isfinite(fit[var].values).any():
                check(ax, fit)
            else:  # e.g. no run memorized
                assert [t.get_text() for t in ax.texts] == ["no finite local slope / exponent"]


def check_quality_figures(figs: dict, cube: xr.Dataset, fit: xr.Dataset, *, data_dim: int | None, only=None) -> None:
    """make_quality_figures: tau_gen and tau_mem with their fits; the metric and the loss gap per n (mean
    over seeds); P(Delta > 0) against n (or n/d) at three steps."""
    want = lambda name: only is None or name in only  # noqa: E731
    if want("timescales.png"):
        ax = figs["timescales.png"].axes[0]
        taus = [var for var in (names.TAU_GEN, names.TAU_MEM) if var in fit]  # tau_mem: absent without a time axis
        fits = {line.get_label().split(" ")[0]: line for line in curves(ax)}
        for points, var in zip(ax.collections, taus):
            tau = fit[var].transpose(names.N, names.SEED)
            ok = np.isfinite(tau.values)
            assert_points(points.get_offsets(), np.broadcast_to(tau[names.N].values[:, None], tau.shape)[ok],
                          tau.values[ok])
            b, a = float(fit[f"{var}_exponent"]), float(fit[f"{var}_prefactor"])
            assert (var in fits) == np.isfinite(b)  # the fitted power law, where there is one
            if np.isfinite(b):
                x, y = xy(fits[var])
                np.testing.assert_allclose(y, a * x**b)
                assert fits[var].get_label().startswith(f"{var} ~ n^{b:.2f} [")
    if want("quality_vs_step.png"):
        metric = fit.attrs["tau_gen_metric"]
        ax = figs["quality_vs_step.png"].axes[0]
        assert_curves(curves(ax), [seed_means(cube[metric], n) for n in cube[names.N].values])
        assert ax.get_ylabel() == cube[metric].attrs.get("long_name", metric)
    if want("loss_gap.png"):
        ax = figs["loss_gap.png"].axes[0]
        gap = cube[names.TEST_LOSS] - cube[names.TRAIN_LOSS]
        assert_curves(curves(ax), [seed_means(gap, n) for n in cube[names.N].values])
        assert hlines(ax) == [0.0]
    if want("p_delta_pos.png"):
        ax = figs["p_delta_pos.png"].axes[0]
        p = cube[names.P_DELTA_POS]
        steps = [s for s in cube[names.STEP].values if s > 0]
        picks = sorted({steps[len(steps) // 3], steps[2 * len(steps) // 3], steps[-1]})
        x = cube[names.N].values / (data_dim or 1)
        assert_curves(curves(ax), [(x, p.sel({names.STEP: s}).values) for s in picks])
        assert legend(ax) == [f"step {s}" for s in picks]
        assert ax.get_xlabel() == ("n / d" if data_dim else "n")


def check_closed_form_figure(figs: dict, cube: xr.Dataset, *, quality: bool, data_dim: int | None) -> None:
    """make_closed_form_figures: f_mem (or the quality metric, and P(Delta > 0)) at the one step against
    n (or n / d): mean over seeds, bars one standard deviation."""
    x = cube[names.N].values / (data_dim or 1)
    last = cube.isel({names.STEP: -1})
    if not quality:
        ax = figs["f_mem_vs_n.png"].axes[0]
        (line,) = bars(ax)
        np.testing.assert_allclose(np.column_stack(xy(line)), np.column_stack([x, last[names.F_MEM].mean(names.SEED)]))
        return
    axes = figs["quality_vs_n.png"].axes
    panels = [m for m in (pick_quality_metric(cube, "auto"), names.P_DELTA_POS) if m is not None and m in cube]
    assert len(axes) == len(panels)
    for ax, var in zip(axes, panels):
        v = last[var]
        line = bars(ax)[0] if names.SEED in v.dims else curves(ax)[0]
        y = v.mean(names.SEED).values if names.SEED in v.dims else v.values
        np.testing.assert_allclose(np.column_stack(xy(line)), np.column_stack([x, y]))


def check_strength_sweep(fig, cube: xr.Dataset, key: str = names.STRENGTH) -> None:
    """sweep_strength.png: per n, f_mem at the last step (mean over seeds) against the strength; beside it,
    per feature space, the FD at the last step, and the quality baselines as one horizontal line per n each."""
    ax = fig.axes[0]
    last = cube[names.F_MEM].isel({names.STEP: -1})
    strengths = cube[key].values
    assert_curves(bars(ax), [(strengths, last.sel({names.N: n}).mean(names.SEED).values) for n in cube[names.N].values])
    assert legend(ax) == [f"n = {n}" for n in cube[names.N].values]
    spaces = sweep.fd_spaces(cube)
    assert len(fig.axes) == 1 + len(spaces)
    for ax, space in zip(fig.axes[1:], spaces):
        assert ax.get_ylabel() == f"FD ({space} space) at the last checkpoint"
        fd = cube[names.FD.format(space=space)].isel({names.STEP: -1})
        assert_curves(bars(ax), [(strengths, fd.sel({names.N: n}).mean(names.SEED).values) for n in cube[names.N].values])
        base = [names.FD_HELDOUT.format(space=space), names.FD_TRAIN.format(space=space)]
        expect = [float(cube[v].sel({names.N: n}).isel({key: 0}).mean(names.SEED))
                  for n in cube[names.N].values for v in base if v in cube]
        np.testing.assert_allclose(sorted(hlines(ax)), sorted(expect))


def check_width_sweep(fig, cube: xr.Dataset, fit: xr.Dataset) -> None:
    """sweep_width.png: per width, f_mem_final against n; n* against the parameter count."""
    ax, ax2 = fig.axes[:2]
    n = fit[names.N].values
    assert_curves(bars(ax), [(n, fit[names.F_MEM_FINAL].sel({names.WIDTH: w}).values) for w in cube[names.WIDTH].values])
    widths = [f"width {w:g} ({int(p):,} params)" for w, p in zip(cube[names.WIDTH].values, cube[names.N_PARAMS].values)]
    assert [t for t in legend(ax) if t.startswith("width ")] == widths
    assert f"threshold {fit.attrs['tau_mem_threshold']:g}" in legend(ax)
    n_star, params = fit[names.N_STAR].values, cube[names.N_PARAMS].values
    ok = np.isfinite(n_star)
    lines = curves(ax2)
    assert len(lines) == int(ok.any())
    if ok.any():
        np.testing.assert_allclose(np.column_stack(xy(lines[0])), np.column_stack([params[ok], n_star[ok]]))
    if not ok.all():  # a width where no n memorizes: a marker under the lowest n
        (marks,) = [c for c in ax2.collections if c.get_label() == "no n memorizes"]
        np.testing.assert_allclose(marks.get_offsets()[:, 0], params[~ok])


# ---- synthetic data


def synthetic_cube(*, n=N, steps=STEPS, seeds: int = 3, scale: float = 3.0, seed: int = 0) -> xr.Dataset:
    """f_mem rising around tau_mem = scale n (logistic in log step), losses, a quality metric (fd_data) that
    settles around tau_gen = n / 3, and P(Delta > 0) per (n, step)."""
    rng = np.random.default_rng(seed)
    n = np.asarray(n)
    tau = scale * n[:, None] * np.exp(0.1 * rng.normal(size=(n.size, seeds)))
    logstep = np.log(np.maximum(steps, 1))
    f = 1 / (1 + np.exp(-4 * (logstep - np.log(tau)[..., None])))
    train = 1.0 / (1 + steps / 100.0) + 0.05 * rng.random(f.shape)
    test = train + 0.3 * f
    fd = 1.0 + 10.0 * np.exp(-steps / (n[:, None, None] / 3.0)) + 0.01 * rng.random(f.shape)
    dims = (names.N, names.SEED, names.STEP)
    cube = xr.Dataset({names.F_MEM: (dims, f), names.TRAIN_LOSS: (dims, train), names.TEST_LOSS: (dims, test),
                       METRIC: (dims, fd), names.P_DELTA_POS: ((names.N, names.STEP), rng.uniform(size=(n.size, steps.size)))},
                      coords={names.N: n, names.SEED: np.arange(seeds), names.STEP: steps}, attrs={"experiment": "synthetic"})
    cube[names.F_MEM].attrs[names.RATIO_THRESHOLD] = 1 / 3
    if steps.size > 4:
        cube[names.TRAIN_LOSS][1, 0, 4] = np.nan  # a missing value is left out of the mean, not drawn as NaN
    return cube


@pytest.fixture(scope="module")
def cube_and_fit():
    cube = synthetic_cube()
    fit = fit_onsets(cube, FitConfig(tau_mem_threshold=0.5, num_bootstrap=50), rng=np.random.default_rng(1))
    assert fit.attrs["tau_gen_metric"] == METRIC
    return cube, fit


# ---- the figures of the synthetic experiment


def test_experiment_figures_show_the_cube_and_the_fit(tmp_path, drawn, cube_and_fit):
    cube, fit = cube_and_fit
    figs = drawn.watch(experiment)
    paths = experiment.make_figures(cube, fit, tmp_path, title="synthetic")
    assert sorted(p.name for p in paths) == sorted(figs) == sorted(
        ["f_mem_vs_step.png", "f_mem_vs_step_over_n.png", "tau_mem_vs_n.png", "losses.png", "overview.png", "scaling.png"])
    check_experiment_figures(figs, cube, fit)
    assert all(figs[name].axes[0].get_title() == "synthetic" for name in ("f_mem_vs_step.png", "losses.png"))
    assert figs["f_mem_vs_step.png"].axes[0].get_ylabel() == "f_mem  (d1/d2 < 0.33)"
    assert figs["overview.png"].get_suptitle() == "synthetic"


def test_a_perturbed_cube_fails_the_check(tmp_path, drawn, cube_and_fit):
    """The checks can fail: a figure drawn from other numbers does not pass as this cube's figure."""
    cube, fit = cube_and_fit
    figs = drawn.watch(experiment)
    other = cube.copy(deep=True)
    other[names.F_MEM][0, :, 5] *= 0.5
    experiment.make_figures(other, fit, tmp_path, only={"f_mem_vs_step"})
    with pytest.raises(AssertionError, match=r"(?s)curve x=.* not drawn"):
        check_f_mem(figs["f_mem_vs_step.png"].axes[0], cube)


def check_tau_gen_levels(fig, fit: xr.Dataset) -> None:
    """tau_gen_levels.png: the common targets as horizontal lines (left); tau_gen's exponent at each quality
    level with its CI (right), every level drawn once, grouped by what the CI rejects, with b = 0 and b = 1."""
    left, right = fig.axes
    targets = fit[names.QUALITY_TARGET].values
    np.testing.assert_allclose(sorted(h for h in hlines(left)), sorted(targets[np.isfinite(targets)]))
    exps = fit[f"{names.TAU_GEN_LEVELS}_exponent"]
    drawn_points = [pt for line in bars(right) for pt in zip(*xy(line))]
    want = [(float(q), float(b)) for q, b in zip(exps[names.QUALITY_LEVEL].values, exps.values) if np.isfinite(b)]
    np.testing.assert_allclose(sorted(drawn_points), sorted(want))
    assert {0.0, 1.0} <= set(hlines(right))
    verdicts = experiment.tau_gen_level_verdicts(fit)
    ci = fit[f"{names.TAU_GEN_LEVELS}_exponent_ci"]
    assert sorted(q for group in verdicts.values() for q in group) == sorted(exps[names.QUALITY_LEVEL].values)
    for q in verdicts["b = 1 rejected"] + verdicts["both rejected"]:
        assert float(ci.sel({names.QUALITY_LEVEL: q, names.CI_BOUND: "upper"})) < 1
    for q in verdicts["b = 0 rejected"] + verdicts["both rejected"]:
        assert float(ci.sel({names.QUALITY_LEVEL: q, names.CI_BOUND: "lower"})) > 0


def test_quality_figures_show_tau_gen_the_metric_and_p_delta(tmp_path, drawn, cube_and_fit):
    cube, fit = cube_and_fit
    figs = drawn.watch(experiment)
    paths = experiment.make_quality_figures(cube, fit, tmp_path, title="synthetic", data_dim=4)
    assert sorted(p.name for p in paths) == sorted(figs) == ["loss_gap.png", "p_delta_pos.png", "quality_vs_step.png",
                                                             "tau_gen_levels.png", "timescales.png"]
    check_quality_figures(figs, cube, fit, data_dim=4)
    check_tau_gen_levels(figs["tau_gen_levels.png"], fit)
    fill = [c for c in figs["timescales.png"].axes[0].collections if c.get_label() == "generalization window"]
    assert len(fill) == 1  # tau_mem above tau_gen: the window between them is shaded


@pytest.mark.parametrize("quality", [False, True])
def test_closed_form_figures_read_the_one_step_against_n_over_d(tmp_path, drawn, quality):
    cube = synthetic_cube(steps=np.array([300])).drop_vars([names.TRAIN_LOSS, names.TEST_LOSS])
    figs = drawn.watch(experiment)
    experiment.make_closed_form_figures(cube, xr.Dataset(), tmp_path, title="t", quality=quality, data_dim=8)
    check_closed_form_figure(figs, cube, quality=quality, data_dim=8)
    assert figs["quality_vs_n.png" if quality else "f_mem_vs_n.png"].axes[0].get_xlabel() == "n / d"


def test_compare_p_delta_draws_one_curve_per_dimension(tmp_path, drawn):
    cubes = [synthetic_cube(seed=s) for s in (0, 1)]
    figs = drawn.watch(experiment)
    experiment.compare_p_delta(cubes, [8, 16], tmp_path / "cmp.png")
    ax = figs["cmp.png"].axes[0]
    assert_curves(curves(ax), [(c[names.N].values / d, c[names.P_DELTA_POS].isel({names.STEP: -1}).values)
                               for c, d in zip(cubes, (8, 16))])
    assert legend(ax) == ["d = 8", "d = 16"] and hlines(ax) == [0.5]


# ---- the plot stage: the figures of one experiment in one call


def written_files(tmp_path, cube: xr.Dataset, fit: xr.Dataset) -> list[str]:
    """--cube and --fit of the plot stage: the cube and the fit written as the cube and fit stages write them."""
    cube.to_netcdf(tmp_path / "cube.nc", engine="h5netcdf")
    write_fit(fit, tmp_path / "fit.nc")
    return ["--cube", str(tmp_path / "cube.nc"), "--fit", str(tmp_path / "fit.nc")]


def test_the_plot_stage_draws_memorization_and_quality_figures_in_one_call(tmp_path, drawn, cube_and_fit):
    """What the workflow's one plot job per experiment does: `diffmem plot --figures` with figures of both
    families draws each from the same cube and fit, pixel for pixel as a call of its own (a process per
    figure, as the workflow drew them before) draws it."""
    cube, fit = cube_and_fit
    files = written_files(tmp_path, cube, fit)
    figs = drawn.watch(experiment)
    one_call = tmp_path / "one_call"
    with drawn.as_a_new_process():
        plot_stage.main(["--figures", "tau_mem_vs_n", "p_delta_pos", *files, "--data-dim", "4", "--outdir", str(one_call),
                         "--title", "synthetic"])
    assert sorted(p.name for p in one_call.iterdir()) == sorted(figs) == ["p_delta_pos.png", "tau_mem_vs_n.png"]
    check_experiment_figures(figs, cube, fit, only={"tau_mem_vs_n.png"})
    check_quality_figures(figs, cube, fit, data_dim=4, only={"p_delta_pos.png"})
    for name in ("tau_mem_vs_n", "p_delta_pos"):
        with drawn.as_a_new_process():
            plot_stage.main(["--figures", name, *files, "--data-dim", "4", "--outdir", str(tmp_path / name), "--title", "synthetic"])
        assert drawn.same_pixels(tmp_path / name / f"{name}.png", one_call / f"{name}.png"), name


@pytest.mark.parametrize("flags, figures, message", [
    ([], ["overview", "f_mem_vs_n"], "no figure(s) ['f_mem_vs_n'] among the figures (overview, "),
    (["--closed-form"], ["f_mem_vs_n", "overview"], "no figure(s) ['overview'] among the closed-form figures (f_mem_vs_n, quality_vs_n)"),
])
def test_the_plot_stage_names_a_figure_of_no_family_before_drawing(tmp_path, capsys, cube_and_fit, flags, figures, message):
    files = written_files(tmp_path, *cube_and_fit)
    with pytest.raises(SystemExit):
        plot_stage.main([*flags, "--figures", *figures, *files, "--outdir", str(tmp_path / "figures")])
    assert f"diffmem: error: plot: {message}" in capsys.readouterr().err
    assert not (tmp_path / "figures").exists()


def test_the_plot_stage_draws_a_closed_form_experiments_two_figures_in_one_call(tmp_path, drawn):
    cube = synthetic_cube(steps=np.array([300])).drop_vars([names.TRAIN_LOSS, names.TEST_LOSS])
    files = written_files(tmp_path, cube, xr.Dataset())
    figs = drawn.watch(experiment)
    plot_stage.main(["--closed-form", "--figures", "f_mem_vs_n", "quality_vs_n", *files, "--data-dim", "8",
                     "--outdir", str(tmp_path / "figures")])
    assert sorted(figs) == ["f_mem_vs_n.png", "quality_vs_n.png"]
    for quality in (False, True):
        check_closed_form_figure(figs, cube, quality=quality, data_dim=8)


def test_the_plot_stage_compares_p_delta_across_cubes(tmp_path, drawn):
    cubes = [synthetic_cube(seed=s) for s in (0, 1)]
    for k, cube in enumerate(cubes):
        cube.to_netcdf(tmp_path / f"cube{k}.nc", engine="h5netcdf")
    figs = drawn.watch(experiment)
    plot_stage.main(["--compare", str(tmp_path / "cube0.nc"), str(tmp_path / "cube1.nc"), "--dims", "8", "16",
                     "--out", str(tmp_path / "cmp.png")])
    ax = figs["cmp.png"].axes[0]
    assert_curves(curves(ax), [(c[names.N].values / d, c[names.P_DELTA_POS].isel({names.STEP: -1}).values)
                               for c, d in zip(cubes, (8, 16))])


def test_strength_sweep_figure_shows_f_mem_against_strength_per_n(tmp_path, drawn):
    values = [0.0, 0.1, 1.0]
    parts = [synthetic_cube(steps=np.array([300]), seed=k) for k in range(len(values))]  # one step, as closed forms
    fits = [fit_onsets(c, FitConfig(num_bootstrap=10), rng=np.random.default_rng(0)) for c in parts]
    for part in parts:  # the per-run quality baselines, the same at every strength (the same runs)
        n_seed = part[names.F_MEM].isel({names.STEP: 0}).transpose(names.N, names.SEED)
        part[names.FD_HELDOUT.format(space="data")] = xr.full_like(n_seed, 0.5, dtype=float) + 0.01 * n_seed[names.N]
        part[names.FD_TRAIN.format(space="data")] = xr.full_like(n_seed, 4.0, dtype=float) + n_seed[names.SEED]
    cube = combine_sweep(parts, key=names.STRENGTH, values=values)
    fit = combine_sweep(fits, key=names.STRENGTH, values=values)
    figs = drawn.watch(sweep)
    assert sweep.make_sweep_figure(cube, fit, tmp_path).name == "sweep_strength.png"
    check_strength_sweep(figs["sweep_strength.png"], cube)
    assert figs["sweep_strength.png"].axes[1].get_ylabel() == "FD (data space) at the last checkpoint"
    assert len(hlines(figs["sweep_strength.png"].axes[1])) == 2 * cube.sizes[names.N]


def test_tikhonov_sweep_figure_is_the_strength_figure_over_the_training_penalty(tmp_path, drawn):
    values = [0.0, 0.01]
    parts = [synthetic_cube(seed=k) for k in range(len(values))]
    fits = [fit_onsets(c, FitConfig(num_bootstrap=10), rng=np.random.default_rng(0)) for c in parts]
    cube = combine_sweep(parts, key=names.TIKHONOV, values=values)
    fit = combine_sweep(fits, key=names.TIKHONOV, values=values)
    figs = drawn.watch(sweep)
    assert sweep.make_sweep_figure(cube, fit, tmp_path).name == "sweep_tikhonov.png"
    check_strength_sweep(figs["sweep_tikhonov.png"], cube, key=names.TIKHONOV)
    assert figs["sweep_tikhonov.png"].axes[0].get_xlabel().startswith("Tikhonov penalty c")


def test_width_sweep_figure_shows_f_mem_n_star_and_the_collapse(tmp_path, drawn):
    widths = [8, 16]
    parts = [synthetic_cube(scale=48 / w, seed=k) for k, w in enumerate(widths)]  # tau_mem ~ n / W
    fits = [fit_onsets(c, FitConfig(tau_mem_threshold=0.5, num_bootstrap=10), rng=np.random.default_rng(0))
            for c in parts]
    cube = combine_sweep(parts, key=names.WIDTH, values=widths, n_params=[100, 300])
    fit = combine_sweep(fits, key=names.WIDTH, values=widths, n_params=[100, 300])
    fit = fit.assign(width_collapse(fit, num_bootstrap=10))
    figs = drawn.watch(sweep)
    assert sweep.make_sweep_figure(cube, fit, tmp_path).name == "sweep_width.png"
    fig = figs["sweep_width.png"]
    check_width_sweep(fig, cube, fit)
    assert len(fig.axes) == 3  # tau_mem * W collapses: its panel is drawn
    scaled = fit[names.TAU_MEM_TIMES_WIDTH]
    expected = []
    for w in widths:
        n, g = geometric_mean(scaled.sel({names.WIDTH: w}))
        expected.append((n, g))
    assert_curves(bars(fig.axes[2]), expected)


def test_a_legend_never_prints_an_undefined_ci():
    from diffmem.figures.common import ci_label

    assert ci_label(float("nan"), float("nan"), seeds=1) == "(no CI: one seed)"
    assert "nan" not in ci_label(float("nan"), 0.5)
    assert ci_label(0.1, 0.9, seeds=2) == "[0.10, 0.90] (2 seeds)"
    assert ci_label(0.1, 0.9, seeds=3) == "[0.10, 0.90]"


def _one_log_panel():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(np.geomspace(1, 1e4, 50), np.linspace(0, 1, 50), marker="o", label="f_mem")
    ax.set_xscale("log")
    ax.legend()
    ax.set_title("a title")
    return fig


def _tight_layout_panels():  # tight_layout() leaves a placeholder layout engine behind
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(6, 2.5))
    axes[0].scatter([30, 60, 120], [1e3, 2.2e3, 4.1e3], label="tau_mem")
    axes[0].set(xscale="log", yscale="log", ylabel="tau_mem")
    axes[0].legend(fontsize=7)
    axes[1].errorbar([1, 2, 3], [0.9, 1.1, 1.0], yerr=0.1, capsize=2)
    axes[1].annotate("1.02", (2, 1.1), xytext=(0, 6), textcoords="offset points")
    fig.suptitle("an experiment")
    fig.tight_layout()
    return fig


def _placed_panels():  # add_axes with the axes off and text beyond them, as the copy gallery does
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(3, 2))
    ax = fig.add_axes((0.1, 0.05, 0.8, 0.7))
    ax.set_xlim(0, 2)
    ax.set_ylim(1.5, -0.3)
    ax.axis("off")
    ax.imshow(np.linspace(0, 1, 16).reshape(4, 4), cmap="gray", extent=(0, 1, 1, 0), aspect="auto")
    ax.add_artist(plt.Rectangle((0, 0), 1, 1, fill=False, edgecolor="#d62728", lw=3))
    ax.text(0.5, 1.04, "d1/d2 0.12 MEM", ha="center", va="top", fontsize=7)
    fig.text(0.5, 0.97, "step 100\ninside the window", ha="center", va="top", fontsize=8)
    return fig


@pytest.mark.parametrize("draw", [_one_log_panel, _tight_layout_panels, _placed_panels])
def test_save_figure_writes_the_pixels_of_a_default_png_at_its_own_compression(tmp_path, drawn, draw):
    """save_figure crops to the box it measures itself (one draw, not savefig("tight")'s two) and sets its own
    zlib level: the PNG's bytes change, not its pixels."""
    import matplotlib.pyplot as plt

    from diffmem.figures.common import save_figure

    save_figure(draw(), tmp_path / "ours.png")
    fig = draw()
    fig.savefig(tmp_path / "default.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    assert drawn.same_pixels(tmp_path / "ours.png", tmp_path / "default.png")
    assert (tmp_path / "ours.png").read_bytes() != (tmp_path / "default.png").read_bytes()


def test_tight_bbox_is_the_box_savefig_tight_crops_to():
    import matplotlib.pyplot as plt
    from matplotlib.backend_bases import _get_renderer

    from diffmem.figures.common import DPI, tight_bbox

    for draw in (_one_log_panel, _tight_layout_panels, _placed_panels):
        fig = draw()
        ours = tight_bbox(fig)
        fig.dpi = DPI  # savefig("tight"): a draw without rendering at the saving dpi, then the figure's box
        renderer = _get_renderer(fig)
        with renderer._draw_disabled():
            fig.draw(renderer)
        theirs = fig.get_tightbbox(renderer).padded(plt.rcParams["savefig.pad_inches"])
        plt.close(fig)
        np.testing.assert_array_equal(ours.get_points(), theirs.get_points())


@pytest.mark.parametrize("style", [None, "probe"])
def test_lineplot_se_draws_seaborns_mean_and_standard_error(tmp_path, drawn, style):
    """The grouped mean +- se draws what seaborn's lineplot(errorbar="se") draws, pixel for pixel: lines, bands
    (one seed at an x: no band there; a missing value: left out), legend."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    rng = np.random.default_rng(0)
    rows = [{"n": n, "seed": seed, "step": step, "probe": probe, "y": rng.uniform(0.1, 1.0)}
            for n in (32, 64, 128) for seed in range(3) for step in (1, 10, 100, 1000)
            for probe in ("train_loss", "test_loss")]
    df = pd.DataFrame(rows)
    df.loc[3, "y"] = np.nan
    df = df[~((df["step"] == 1000) & (df["n"] == 128) & (df["seed"] > 0))]  # one seed left there
    palette = sns.color_palette("viridis", n_colors=3)
    with drawn.as_a_new_process():
        sns.set_theme(style="whitegrid", context="paper")
        for name, draw in (("seaborn", lambda ax: sns.lineplot(data=df, x="step", y="y", hue="n", style=style,
                                                               palette=palette, errorbar="se", marker="o", ax=ax)),
                           ("ours", lambda ax: experiment.lineplot_se(ax, df, x="step", y="y", hue="n", style=style,
                                                                      palette=palette, marker="o"))):
            fig, ax = plt.subplots(figsize=(4, 3))
            draw(ax)
            ax.set_xscale("log")
            fig.savefig(tmp_path / f"{name}.png", dpi=80)
            plt.close(fig)
    assert drawn.same_pixels(tmp_path / "ours.png", tmp_path / "seaborn.png")
