"""Every model family through the real Snakemake workflow (tests/smoke_families.yaml).

Closed-form families (empirical, linear) plan no training jobs and give a one-step cube; sweeps of
`strength` and `width` become cube dimensions; the random-features family trains at one diffusion time
and fits the split time. About a minute on two cores.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import xarray as xr
import yaml
from test_families_one_step import check_linear_exact_figures
from test_figures import check_closed_form_figure, check_strength_sweep, check_width_sweep
from test_rf_stage import check_rf_figures
from test_workflow import REPO, counts, planned_jobs, snakemake, write_config

from diffmem import names
from diffmem.cli import main as diffmem
from diffmem.config import ModelConfig
from diffmem.figures import experiment, linear_exact, rf, sweep
from diffmem.fitfile import read_fit
from diffmem.models import build_denoiser, count_parameters

pytestmark = pytest.mark.snakemake
SMOKE = yaml.safe_load((REPO / "tests" / "smoke_families.yaml").read_text())


def open_nc(path):
    if path.name == "fit.nc":  # a fit.nc in groups (diffmem.fitfile), or flat (random features, linear_exact)
        return read_fit(path)
    with xr.open_dataset(path) as ds:
        return ds.load()


def redrawn(drawn, module, figures: list[str], folder, out, draw) -> dict:
    """The workflow's `figures` in `folder`, drawn again by `draw()` into `out` as its job drew them (a new
    process's settings): the same pixels, and the Figures to check what they show."""
    figs = drawn.watch(module)
    with drawn.as_a_new_process():
        draw()
    for name in figures:
        assert drawn.same_pixels(out / name, folder / name), name
    return figs


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("families")
    cfg = copy.deepcopy(SMOKE)
    cfg["results_dir"] = "results"
    write_config(workdir, cfg)
    plan = planned_jobs(workdir)
    snakemake(workdir)
    return workdir, cfg, plan


def test_only_trained_families_plan_training_jobs(finished):
    _, _, plan = finished
    trained = {job["exp"] for rule, job in plan if rule == "train"}
    assert trained == {"lintrained", "widths/width8", "widths/width16"}
    sampled_closed = {job["exp"] for rule, job in plan if rule == "closed_form_sample"}
    assert sampled_closed == {"emp/strength0", "emp/strength1", "lin"}
    assert {job["exp"] for rule, job in plan if rule == "rf_train"} == {"rf"}
    # random features generate no samples: nothing is sampled, scored or quality-checked for them
    assert not any(job.get("exp") == "rf" for rule, job in plan if rule in ("sample", "score", "quality"))
    c = counts(plan)
    assert c["sweep_strength"] == 1 and c["sweep_width"] == 1


def test_empirical_denoiser_memorizes_and_tikhonov_lowers_it(finished, drawn, tmp_path):
    workdir, _, _ = finished
    cube = open_nc(workdir / "results" / "emp" / "cube.nc")
    assert list(cube[names.STRENGTH].values) == [0.0, 1.0]
    assert list(cube[names.STEP].values) == [0]  # closed form: one "checkpoint"
    f = cube[names.F_MEM].isel({names.STEP: 0})
    assert float(f.sel({names.STRENGTH: 0.0}).min()) > 0.9  # the exact minimizer reproduces training points
    assert float(f.sel({names.STRENGTH: 1.0}).max()) < 0.5
    assert "fd_data" in cube  # quality metrics read against strength
    fit = open_nc(workdir / "results" / "emp" / "fit.nc")
    assert names.TAU_MEM not in fit  # no time axis
    assert fit[names.N_STAR].sel({names.STRENGTH: 0.0}) == 48
    assert np.isnan(fit[names.N_STAR].sel({names.STRENGTH: 1.0}))
    figs = redrawn(drawn, sweep, ["sweep_strength.png"], workdir / "results" / "emp" / "figures", tmp_path,
                   lambda: sweep.make_sweep_figure(cube, fit, tmp_path, title="emp"))
    check_strength_sweep(figs["sweep_strength.png"], cube)


def test_linear_closed_form_cube_has_e_tg_against_n_over_d(finished, drawn, tmp_path):
    workdir, _, _ = finished
    cube = open_nc(workdir / "results" / "lin" / "cube.nc")
    assert list(cube[names.N].values) == [2, 16]  # psi_n = 0.5, 4 at d = 4
    assert "closed_form" in cube.attrs
    assert {names.E_TG, names.E_OG, names.P_DELTA_POS, names.DENOISER_ERR_POP} <= set(cube.data_vars)
    # with n = d/2 the linear model's samples live in the span of the training set: closer to it than to
    # the population, so Delta < 0 for every seed
    assert float(cube[names.P_DELTA_POS].sel({names.N: 2}).squeeze()) == 0.0
    exp = workdir / "results" / "lin"
    figures = ["f_mem_vs_n", "quality_vs_n"]  # the plot job's command: both figures in one call
    figs = redrawn(drawn, experiment, [f"{name}.png" for name in figures], exp / "figures", tmp_path, lambda: diffmem(
        ["plot", "--closed-form", "--data-dim", "4", "--figures", *figures, "--cube", str(exp / "cube.nc"),
         "--fit", str(exp / "fit.nc"), "--outdir", str(tmp_path), "--title", "lin"]))
    for quality in (False, True):
        check_closed_form_figure(figs, cube, quality=quality, data_dim=4)


def test_linear_net_trains_through_the_normal_training_stage(finished):
    workdir, _, _ = finished
    cube = open_nc(workdir / "results" / "lintrained" / "cube.nc")
    assert cube.sizes[names.STEP] > 2
    loss = cube[names.TRAIN_LOSS].mean(names.SEED)
    assert bool((loss.isel({names.STEP: -1}) < loss.isel({names.STEP: 0})).all())


def test_width_sweep_is_a_cube_dimension_with_parameter_counts(finished, drawn, tmp_path):
    workdir, cfg, _ = finished
    cube = open_nc(workdir / "results" / "widths" / "cube.nc")
    fit = open_nc(workdir / "results" / "widths" / "fit.nc")
    assert list(cube[names.WIDTH].values) == [8, 16]
    model = {k: v for k, v in cfg["experiments"]["widths"]["model"].items() if k != "width"}
    expected = [count_parameters(build_denoiser(ModelConfig.from_dict({**model, "width": w}), data_shape=(1, 8, 8)))
                for w in (8, 16)]
    assert list(cube[names.N_PARAMS].values) == expected
    assert fit[names.N_STAR].dims == (names.WIDTH,)
    assert fit[names.F_MEM_FINAL].dims == (names.WIDTH, names.N)
    figs = redrawn(drawn, sweep, ["sweep_width.png"], workdir / "results" / "widths" / "figures", tmp_path,
                   lambda: sweep.make_sweep_figure(cube, fit, tmp_path, title="widths"))
    check_width_sweep(figs["sweep_width.png"], cube, fit)


def test_random_features_split_time_and_theory(finished, drawn, tmp_path):
    workdir, _, _ = finished
    cube = open_nc(workdir / "results" / "rf" / "cube.nc")
    assert {names.TRAIN_LOSS, names.TEST_LOSS, "score_error"} <= set(cube.data_vars)
    first, last = cube[names.TRAIN_LOSS].isel({names.STEP: 0}), cube[names.TRAIN_LOSS].isel({names.STEP: -1})
    assert bool((last < first).all())
    fit = open_nc(workdir / "results" / "rf" / "fit.nc")
    theory = [v for v in fit.data_vars if "theory" in v]
    assert theory and bool(np.isfinite(fit[theory[0]]).all())
    exp = workdir / "results" / "rf"
    figs = redrawn(drawn, rf, ["rf_losses.png", "rf_split_time.png"], exp / "figures", tmp_path, lambda: diffmem(
        ["rf-plot", "--cube", str(exp / "cube.nc"), "--fit", str(exp / "fit.nc"), "--outdir", str(tmp_path), "--title", "rf"]))
    check_rf_figures(figs, cube, fit)


def plan_with(workdir, cfg, *, restore, targets=()):
    """The jobs Snakemake plans for `cfg` (and `targets`, default all) in the finished workdir; `restore` is
    written back after."""
    write_config(workdir, cfg)
    try:
        return planned_jobs(workdir, *targets)
    finally:
        write_config(workdir, restore)


def test_adding_a_strength_runs_only_the_new_value_and_the_sweep(finished):
    workdir, cfg, _ = finished
    cfg = copy.deepcopy(cfg)
    cfg["experiments"]["emp"]["model"]["strength"] = [0.0, 0.1, 1.0]
    plan = plan_with(workdir, cfg, restore=finished[1])
    leaves = {job["exp"] for _, job in plan if "exp" in job}
    assert leaves <= {"emp", "emp/strength0.1"}
    c = counts(plan)
    assert c["closed_form_sample"] == 4  # 2 n x 2 seeds of the new strength only
    assert c["sweep_strength"] == 1 and "train" not in c


def test_linear_exact_runs_one_job_per_dimension_and_fits_n_half(finished, drawn, tmp_path):
    workdir, cfg, plan = finished
    runs = sorted(job["d"] for rule, job in plan if rule == "linear_exact_run")
    assert runs == ["4", "8"]
    assert not any(job.get("exp") == "linexact" for rule, job in plan if rule in ("train", "sample", "score"))
    cube = open_nc(workdir / "results" / "linexact" / "cube.nc")
    assert {names.E_TG, names.E_OG, names.DELTA} <= set(cube.data_vars)
    assert cube.sizes[names.SEED] == 12  # the repeats
    fit = open_nc(workdir / "results" / "linexact" / "fit.nc")
    p = fit[names.P_DELTA_POS]
    assert bool(((p >= 0) & (p <= 1)).all())
    exp = workdir / "results" / "linexact"
    figures = ["p_delta_vs_psi_n.png", "n_half_vs_d.png", "e_tg_e_og.png", "kl_generated.png"]
    figs = redrawn(drawn, linear_exact, figures, exp / "figures", tmp_path, lambda: diffmem(
        ["linear-exact", "plot", "--cube", str(exp / "cube.nc"), "--fit", str(exp / "fit.nc"), "--outdir", str(tmp_path),
         "--title", "linexact"]))
    check_linear_exact_figures(figs, cube, fit)
    # adding a dimension runs only that dimension, the stacking, the fit and the figures
    cfg = copy.deepcopy(cfg)
    cfg["experiments"]["linexact"]["model"]["linear_dims"] = [4, 8, 12]
    plan = plan_with(workdir, cfg, restore=finished[1])
    assert sorted(job["d"] for rule, job in plan if rule == "linear_exact_run") == ["12"]
    assert counts(plan)["linear_exact_cube"] == 1
