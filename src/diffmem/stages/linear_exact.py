"""Family `linear_exact`: the linear models of Halder & Pehlevan evaluated in closed form, batched.

The memorization-to-generalization transition of the linear family needs many repeated training draws
(the paper: 300) over a grid of d and n / d.  Every quantity is closed form: the fitted denoiser, the
Gaussian rho_G it generates and the L2 distances E_TG = D(rho_T, rho_G), E_OG = D(rho_O, rho_G)
(``diffmem.metrics.l2``), so no samples are drawn and no torch is needed for the paper's model.  One job
per dimension d computes every (n, repeat) in numpy and writes a small cube; one rule stacks the d's.

Per (d, repeat): a fresh population set of N = quality.num_population points of N(0, sigma^2 I_d) (sigma =
1, diffmem's `gaussian` data) smooths rho_O at eps_O = sigma N^(-1/d); for each n = round(psi_n d) a fresh
training set smooths rho_T at eps_T = sigma n^(-1/d) (the authors' per-set widths with the population
sigma). With `model.linear_populations` several N are measured at once (a cube dimension num_population):
the first N points of one draw of the largest, against the same training sets and models.

The control `delta_oracle` is E_TG - E_OG for rho_G = N(0, sigma^2 I), the population law itself: a model
that generalizes perfectly. Where P(delta_oracle > 0) falls below 1 the estimator itself cannot tell
generalization from memorization at that (d, n, N): the kernel widths eps_T != eps_O bias E_TG against E_OG
(at d = 100 both widths are within 10 % of sigma, and the bias grows like ((2 + eps_O^2)/(2 + eps_T^2))^(d/2)).  Model (`model.linear_variant`):
- `one_step`: the paper's one-step least-squares denoiser at OU time `model.linear_time` (T = 2), see
  ``diffmem.families.one_step``;
- `affine`: diffmem's optimal affine denoiser (``diffmem.families.linear``) integrated exactly by the
  probability-flow ODE from sample.sigma_max to sample.sigma_min (+ the final denoising step).
P(Delta > 0) = 1/2 + 1/2 mean_repeats sign(E_TG - E_OG), as in the paper.

The fit (`fit_transition`) reads n_half, where P(Delta > 0) rises through 1/2 (log-n interpolated), per d,
and fits n_half = A d^b with a bootstrap-over-repeats confidence interval.

Run:
    diffmem linear-exact run --dim 16 --model '<json>' --data '<json>' --quality '<json>' --sample-cfg '<json>' --out d16.nc
    diffmem linear-exact cube --parts d8.nc d16.nc ... --experiment NAME --out cube.nc
    diffmem linear-exact fit --cube cube.nc --fit-cfg '<json>' --out fit.nc
    diffmem linear-exact plot --cube cube.nc --fit fit.nc --outdir figures/
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import xarray as xr

from diffmem import names
from diffmem.config import ConfigError, FitConfig, ModelConfig, QualityConfig, SampleConfig, read_json_arg, stable_hash
from diffmem.cube import load_parts
from diffmem.families.linear import fit_linear_denoiser, linear_generated_gaussian
from diffmem.families.one_step import fit_one_step, one_step_generated, one_step_noise
from diffmem.figures.linear_exact import make_linear_exact_figures
from diffmem.io import atomic_to_netcdf, carried_provenance, fail, provenance
from diffmem.log import configure
from diffmem.metrics.exact import gaussian_kl
from diffmem.metrics.l2 import halder_width, l2_kde_gaussian, log_kde_overlap
from diffmem.onsets import half_crossing
from diffmem.scaling import power_law_fit
from diffmem.stages import stage_parser

__all__ = ["VARIANTS", "generated_gaussian", "evaluate_dim", "combine_dims", "fit_transition",
           "make_linear_exact_figures", "main"]

log = logging.getLogger(__name__)
VARIANTS = ("one_step", "affine")
_STREAM = 0x11E  # this stage's random stream, independent of every other stage's
SIGMA = 1.0  # population standard deviation of diffmem's gaussian data

ATTRS = {
    names.E_TG: {"long_name": "L2 distance int rho_T^2 - 2 int rho_T rho_G (Halder & Pehlevan) less the diagonal "
                              "of int rho_T^2 (= 1 for every set), in units of (4 pi sigma^2)^(-d/2)", "units": "1"},
    names.E_OG: {"long_name": "L2 distance int rho_O^2 - 2 int rho_O rho_G less the diagonal of int rho_O^2 (= 1), "
                              "in units of (4 pi sigma^2)^(-d/2)", "units": "1"},
    names.DELTA: {"long_name": "E_TG - E_OG (positive: rho_G closer to the population than to the training set)",
                  "units": "1"},
    names.KL_GENERATED: {"long_name": "KL(generated Gaussian || population law N(0, sigma^2 I)) in closed form; "
                                      "in nats; +inf where the generated covariance is singular (rank <= n - 1 < d)",
                         "units": "1"},
    names.P_DELTA_POS: {"long_name": "1/2 + 1/2 mean over repeats of sign(E_TG - E_OG)", "units": "1"},
    names.P_DELTA_SE: {"long_name": "binomial standard error of p_delta_pos", "units": "1"},
    names.N_HALF: {"long_name": "n at which P(Delta > 0) first rises through 1/2 (log-n interpolated)", "units": "1"},
    names.N_HALF_CI: {"long_name": "bootstrap-over-repeats confidence interval of n_half", "units": "1"},
    names.DIM: {"long_name": "data dimension d", "units": "1"},
    "eps_population": {"long_name": "kernel width eps_O = sigma N^(-1/d) of rho_O", "units": "1"},
    names.PSI_N: {"long_name": "n / d", "units": "1"},
    names.SEED: {"long_name": "repeat (seed * repeats + repeat index): an independent training and population draw",
                 "units": "1"},
}


def generated_gaussian(train: np.ndarray, *, model: ModelConfig, sample: SampleConfig,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(mean [d], covariance [d, d]) of the Gaussian the model fitted on train [n, d] generates."""
    if model.linear_variant == "one_step":
        y = one_step_noise(train, rng.standard_normal(train.shape), time=model.linear_time)
        return one_step_generated(fit_one_step(train, y), train, time=model.linear_time)
    if model.linear_variant == "affine":
        import torch  # the affine family's closed form lives in the torch module (diffmem.families.linear)

        g = linear_generated_gaussian(fit_linear_denoiser(torch.as_tensor(train)), sigma_max=sample.sigma_max,
                                      sigma_min=sample.sigma_min, final_denoise=True)
        return g.mean.numpy(), g.covariance().numpy()
    raise ConfigError(f"config error at 'model.linear_variant': {model.linear_variant!r} is not one of {VARIANTS}")


def _sizes(dim: int, psi_n: tuple[float, ...]) -> list[int]:
    sizes = [max(2, round(p * dim)) for p in psi_n]
    if len(set(sizes)) != len(sizes):
        raise ConfigError(f"config error at 'data.psi_n': {list(psi_n)} gives repeated n = {sizes} at d = {dim}")
    return sizes


def evaluate_dim(*, dim: int, psi_n: tuple[float, ...], seeds: tuple[int, ...], repeats: int, model: ModelConfig,
                 sample: SampleConfig, num_population: int | tuple[int, ...], log: Callable[[str], None] = log.info,
                 every_s: float = 10.0) -> xr.Dataset:
    """E_TG, E_OG, Delta and the oracle control for every (population size N, psi_n, repeat) at dimension
    `dim`: E_TG and the KL have dims (psi_n, seed), E_OG, Delta and delta_oracle (num_population, psi_n, seed).

    `num_population`: one N or several; several are nested (the first N points of one draw of the largest), so
    that only rho_O changes between them. For one N the draws are those diffmem made before it took several."""
    pops = (int(num_population),) if np.isscalar(num_population) else tuple(int(v) for v in num_population)
    sizes = _sizes(dim, psi_n)
    reps = [(s, r) for s in seeds for r in range(repeats)]
    e_tg = np.full((len(sizes), len(reps)), np.nan)
    e_tg_oracle = np.full_like(e_tg, np.nan)
    kl = np.full_like(e_tg, np.nan)
    e_og = np.full((len(pops), len(sizes), len(reps)), np.nan)
    e_og_oracle = np.full((len(pops), len(reps)), np.nan)
    population_cov = SIGMA**2 * np.eye(dim)
    zero = np.zeros(dim)
    eps_o = [halder_width(size, dim, sigma=SIGMA) for size in pops]
    start = last = time.monotonic()
    for j, (s, r) in enumerate(reps):
        rng = np.random.default_rng([int(s), int(r), int(dim), _STREAM])
        drawn = SIGMA * rng.standard_normal((max(pops), dim))
        sets = []
        for k, (size, eps) in enumerate(zip(pops, eps_o)):
            pop = drawn[:size]
            off_o = log_kde_overlap(pop, pop, eps_x=eps, eps_y=eps, exclude_diagonal=True)  # shared by every n
            sets.append((pop, eps, off_o))
            e_og_oracle[k, j] = l2_kde_gaussian(pop, eps=eps, mean=zero, cov=population_cov, sigma_ref=SIGMA,
                                                offdiag_log=off_o)["e_offdiag"]
        for i, n in enumerate(sizes):
            train = SIGMA * rng.standard_normal((n, dim))
            mean, cov = generated_gaussian(train, model=model, sample=sample, rng=rng)
            kl[i, j] = gaussian_kl(mean, cov, zero, population_cov)
            # the diagonal of int rho^2 is 1 for both sets (per-set widths): compare what remains
            eps_t = halder_width(n, dim, sigma=SIGMA)
            off_t = log_kde_overlap(train, train, eps_x=eps_t, eps_y=eps_t, exclude_diagonal=True)
            e_tg[i, j] = l2_kde_gaussian(train, eps=eps_t, mean=mean, cov=cov, sigma_ref=SIGMA,
                                         offdiag_log=off_t)["e_offdiag"]
            e_tg_oracle[i, j] = l2_kde_gaussian(train, eps=eps_t, mean=zero, cov=population_cov, sigma_ref=SIGMA,
                                                offdiag_log=off_t)["e_offdiag"]
            for k, (pop, eps, off_o) in enumerate(sets):
                e_og[k, i, j] = l2_kde_gaussian(pop, eps=eps, mean=mean, cov=cov, sigma_ref=SIGMA,
                                                offdiag_log=off_o)["e_offdiag"]
        now = time.monotonic()
        if now - last >= every_s or j == len(reps) - 1:
            last = now
            log(f"d={dim}: repeat {j + 1}/{len(reps)} ({now - start:.0f} s)")
    seed_coord = np.array([s * repeats + r for s, r in reps], dtype=np.int64)
    by_pop = (names.NUM_POPULATION, names.PSI_N, names.SEED)
    ds = xr.Dataset(
        {names.E_TG: ((names.PSI_N, names.SEED), e_tg), names.E_OG: (by_pop, e_og),
         names.DELTA: (by_pop, e_tg[None] - e_og), names.KL_GENERATED: ((names.PSI_N, names.SEED), kl),
         names.DELTA_ORACLE: (by_pop, e_tg_oracle[None] - e_og_oracle[:, None, :])},
        coords={names.PSI_N: np.asarray(psi_n, float), names.SEED: seed_coord, names.N: ((names.PSI_N,), np.asarray(sizes)),
                names.DIM: int(dim), names.NUM_POPULATION: np.asarray(pops, np.int64),
                "eps_population": ((names.NUM_POPULATION,), np.asarray(eps_o))},
        attrs={"variant": model.linear_variant, "linear_time": float(model.linear_time), "sigma": SIGMA,
               "divergence": "l2", "widths": "per set: eps = sigma N^(-1/d), sigma = population std"},
    )
    return _annotate(ds)


def _annotate(ds: xr.Dataset) -> xr.Dataset:
    names.annotate(ds)
    for key, attrs in ATTRS.items():
        if key in ds.variables:
            ds[key].attrs.update(attrs)
    return ds


def combine_dims(parts: list[xr.Dataset], *, attrs: dict) -> xr.Dataset:
    """Stack per-d results along `dim` (n becomes a (dim, psi_n) coordinate)."""
    if not parts:
        raise ConfigError("linear-exact cube: no per-d results given")
    parts = sorted(parts, key=lambda p: int(p[names.DIM]))
    cube = xr.concat([p.expand_dims(names.DIM) for p in parts], dim=names.DIM, join="exact", coords="different",
                     compat="equals", combine_attrs="drop_conflicts")
    for coord in (names.N, "eps_population"):  # per d, also when one d (or equal values) left them without it
        if coord in cube.coords and names.DIM not in cube[coord].dims:
            cube = cube.assign_coords({coord: cube[coord].expand_dims({names.DIM: cube[names.DIM].values})})
    cube.attrs.update(attrs)
    return _annotate(cube)


def p_delta(delta: np.ndarray, axis: int = -1) -> np.ndarray:
    """1/2 + 1/2 mean(sign Delta) over `axis`, NaNs ignored."""
    return 0.5 + 0.5 * np.nanmean(np.sign(delta), axis=axis)


def _n_half(n: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """n_half per d from Delta [dim, psi_n, seed] and n [dim, psi_n]; NaN (censored) when P(Delta > 0) is
    already >= 1/2 at the smallest n or never reaches 1/2."""
    p = p_delta(delta)  # [dim, psi_n]
    return np.array([np.nan if p[k, 0] >= 0.5 else half_crossing(n[k], p[k]) for k in range(p.shape[0])])


def _fit_population(cube: xr.Dataset, *, fit: FitConfig, rng: np.random.Generator) -> xr.Dataset:
    """fit_transition at one population size (the cube without a num_population dimension)."""
    delta = cube[names.DELTA].transpose(names.DIM, names.PSI_N, names.SEED).values
    n = cube[names.N].transpose(names.DIM, names.PSI_N).values.astype(float)
    dims = cube[names.DIM].values.astype(float)
    p = p_delta(delta)
    count = np.isfinite(delta).sum(-1)
    n_half = _n_half(n, delta)
    num = delta.shape[-1]
    boot_half = np.empty((fit.num_bootstrap, dims.size))
    boot_b = np.full(fit.num_bootstrap, np.nan)
    for k in range(fit.num_bootstrap):
        pick = rng.integers(0, num, size=(dims.size, num))
        resampled = np.take_along_axis(delta, pick[:, None, :], axis=-1)
        boot_half[k] = _n_half(n, resampled)
        ok = np.isfinite(boot_half[k])
        if ok.sum() >= 2:
            boot_b[k] = power_law_fit(dims[ok], boot_half[k][ok])[1]
    alpha = (1 - fit.ci_level) / 2
    q = [alpha, 1 - alpha]
    ok = np.isfinite(n_half)
    prefactor, exponent = power_law_fit(dims[ok], n_half[ok]) if ok.sum() >= 2 else (np.nan, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a d censored in every bootstrap draw
        half_ci = np.nanquantile(boot_half, q, axis=0).T  # [dim, 2]
    b_ok = boot_b[np.isfinite(boot_b)]
    b_ci = np.quantile(b_ok, q) if b_ok.size else np.array([np.nan, np.nan])
    out = xr.Dataset(
        {names.P_DELTA_POS: ((names.DIM, names.PSI_N), p),
         names.P_DELTA_SE: ((names.DIM, names.PSI_N), np.sqrt(np.clip(p * (1 - p), 0, None) / np.maximum(count, 1))),
         names.N_HALF: ((names.DIM,), n_half), names.N_HALF_CI: ((names.DIM, names.CI_BOUND), half_ci),
         "n_half_censored": ((names.DIM,), (~ok).astype(np.int8)),
         "n_half_exponent": ((), exponent), "n_half_prefactor": ((), prefactor),
         "n_half_exponent_ci": ((names.CI_BOUND,), b_ci)},
        coords={names.DIM: cube[names.DIM].values, names.PSI_N: cube[names.PSI_N].values, names.N: ((names.DIM, names.PSI_N), n.astype(np.int64)),
                names.CI_BOUND: ["lower", "upper"]},
    )
    if names.DELTA_ORACLE in cube:
        oracle = cube[names.DELTA_ORACLE].transpose(names.DIM, names.PSI_N, names.SEED).values
        out[names.P_DELTA_POS_ORACLE] = ((names.DIM, names.PSI_N), p_delta(oracle))
    return out


def fit_transition(cube: xr.Dataset, *, fit: FitConfig, rng: np.random.Generator) -> xr.Dataset:
    """P(Delta > 0) per (d, psi_n) with its binomial error, n_half per d with a bootstrap CI, and the
    power law n_half = A d^b with a bootstrap-over-repeats CI of b (repeats resampled within each d), at each
    population size N (dimension num_population; a cube written before it had one is read as one N); with
    the oracle control, P(delta_oracle > 0) per (N, d, psi_n)."""
    if names.NUM_POPULATION not in cube.dims:
        cube = cube.expand_dims({names.NUM_POPULATION: [int(cube.attrs.get("num_population", 0))]})
    by_pop = [_fit_population(cube.isel({names.NUM_POPULATION: k}), fit=fit, rng=rng)
              for k in range(cube.sizes[names.NUM_POPULATION])]
    out = xr.concat(by_pop, dim=names.NUM_POPULATION, coords="minimal", compat="override")
    out = out.assign_coords({names.NUM_POPULATION: cube[names.NUM_POPULATION].values})
    if names.KL_GENERATED in cube:
        kl = cube[names.KL_GENERATED]
        kl = kl.isel({names.NUM_POPULATION: 0}, drop=True) if names.NUM_POPULATION in kl.dims else kl
        out["kl_generated_median"] = kl.median(names.SEED).transpose(names.DIM, names.PSI_N)
    _annotate(out)
    if "kl_generated_median" in out:
        out["kl_generated_median"].attrs.update({
            "long_name": "median over repeats of KL(generated || population) in nats (+inf: singular generated covariance)",
            "units": "1"})
    out["n_half_censored"].attrs.update({"long_name": "P(Delta > 0) >= 1/2 already at the smallest n, or it never "
                                                      "reaches 1/2 (n_half NaN)", "units": "1"})
    out["n_half_exponent"].attrs.update({"long_name": "exponent b of n_half = A d^b (least squares in log-log)",
                                         "units": "1"})
    out["n_half_prefactor"].attrs.update({"long_name": "prefactor A of n_half = A d^b", "units": "1"})
    out["n_half_exponent_ci"].attrs.update({"long_name": f"bootstrap-over-repeats {fit.ci_level:g} confidence "
                                                         "interval of b", "units": "1"})
    num = cube.sizes[names.SEED]
    out.attrs = carried_provenance(cube.attrs, extra=("variant", "linear_time"))
    out.attrs.update({"num_repeats": int(num), "num_bootstrap": int(fit.num_bootstrap), "ci_level": float(fit.ci_level),
                      "note": "censored d (n_half below the grid or never reached) are excluded from the power law"})
    return out


# ------------------------------------------------------------------------------------------------ figures


def _cmd_run(args) -> None:
    model = ModelConfig.from_dict(read_json_arg(args.model))
    data = read_json_arg(args.data)
    quality = QualityConfig.from_dict(read_json_arg(args.quality))
    sample = SampleConfig.from_dict(read_json_arg(args.sample_cfg))  # sigma_min / max of the affine variant
    if quality.divergence != "l2":
        raise ConfigError("config error at 'quality.divergence': family linear_exact computes the closed-form L2 "
                          f"distance (l2), not {quality.divergence!r}")
    psi_n = tuple(float(n) / float(data["dim"]) for n in data["n_train"])
    populations = model.linear_populations or (quality.num_population,)
    t0 = time.monotonic()
    ds = evaluate_dim(dim=args.dim, psi_n=psi_n, seeds=tuple(data["seeds"]), repeats=model.linear_repeats, model=model,
                      sample=sample, num_population=populations)
    ds.attrs.update(provenance(stable_hash({"model": read_json_arg(args.model), "data": data,
                                            "population": list(populations)})))
    ds.attrs["run_time_s"] = round(time.monotonic() - t0, 1)
    atomic_to_netcdf(ds, args.out)
    for size in ds[names.NUM_POPULATION].values:
        sel = ds.sel({names.NUM_POPULATION: size})
        log.info(f"d={args.dim}, N={int(size)}: P(Delta > 0) = {np.round(p_delta(sel[names.DELTA].values), 3).tolist()}, "
                 f"oracle {np.round(p_delta(sel[names.DELTA_ORACLE].values), 3).tolist()} at n = "
                 f"{ds[names.N].values.tolist()}")
    log.info(f"d={args.dim}: {ds.attrs['run_time_s']} s -> {args.out}")


def _cmd_cube(args) -> None:
    cube = combine_dims(load_parts(args.parts), attrs={"experiment": args.experiment})
    atomic_to_netcdf(cube, args.out)
    log.info(f"cube of d = {cube[names.DIM].values.tolist()} -> {args.out}")


def _cmd_fit(args) -> None:
    cfg = FitConfig.from_dict(read_json_arg(args.fit_cfg))
    (cube,) = load_parts([args.cube])
    out = fit_transition(cube, fit=cfg, rng=np.random.default_rng(0))
    atomic_to_netcdf(out, args.out)
    for size in out[names.NUM_POPULATION].values:
        sel = out.sel({names.NUM_POPULATION: size})
        lo, hi = sel["n_half_exponent_ci"].values
        halves = ", ".join(f"d={int(d)}: {float(h):.3g}" for d, h in zip(sel[names.DIM].values, sel[names.N_HALF].values))
        log.info(f"N={int(size)}: n_half {halves}; n_half ~ d^{float(sel['n_half_exponent']):.3f} [{lo:.3f}, {hi:.3f}]")
    log.info(f"-> {args.out}")


def _cmd_plot(args) -> None:
    cube, fit = load_parts([args.cube, args.fit])
    paths = make_linear_exact_figures(cube, fit, args.outdir, title=args.title)
    log.info(f"wrote {len(paths)} figures to {args.outdir}")


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("diffmem linear-exact", __doc__, "diffmem.stages.linear_exact")
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="every (n, repeat) at one dimension d")
    r.add_argument("--dim", type=int, required=True)
    r.add_argument("--model", required=True, help="model config slice (JSON or path)")
    r.add_argument("--data", required=True, help="data config slice with n_train (at data.dim) and seeds")
    r.add_argument("--quality", required=True, help="quality config slice (divergence, num_population)")
    r.add_argument("--sample-cfg", required=True, help="sample config slice (sigma_max/min of the affine variant)")
    r.add_argument("--out", required=True)
    c = sub.add_parser("cube", help="stack the per-d files")
    c.add_argument("--parts", nargs="+", required=True)
    c.add_argument("--experiment", default="")
    c.add_argument("--out", required=True)
    f = sub.add_parser("fit", help="P(Delta > 0), n_half per d and its power law in d")
    f.add_argument("--cube", required=True)
    f.add_argument("--fit-cfg", required=True)
    f.add_argument("--out", required=True)
    p = sub.add_parser("plot", help="p_delta_vs_psi_n.png, n_half_vs_d.png, e_tg_e_og.png, kl_generated.png")
    p.add_argument("--cube", required=True)
    p.add_argument("--fit", required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--title", default="")
    args = parser.parse_args(argv)
    try:
        {"run": _cmd_run, "cube": _cmd_cube, "fit": _cmd_fit, "plot": _cmd_plot}[args.cmd](args)
    except ConfigError as exc:
        fail(str(exc))


if __name__ == "__main__":
    configure()
    main(sys.argv[1:])
