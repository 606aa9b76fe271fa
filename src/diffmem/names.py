"""Names, long names and units of every xarray dimension and variable diffmem writes.

One place, so cube, fit, plots and users' notebooks agree on spelling.
"""

from __future__ import annotations

# datasets: scikit-learn's digits has this many images
DIGITS_SIZE = 1797
# datasets read from image files (diffmem.images); their per-sample shape is (C, H, W)
IMAGE_DATASETS = ("images", "cifar10", "celeba")
# datasets with class labels (the classifier feature space trains on them)
LABELLED_DATASETS = ("digits", "cifar10")

# attribute of f_mem: the d1/d2 threshold (score.ratio_threshold) the score stage used
RATIO_THRESHOLD = "ratio_threshold"

# dimensions / coordinates (independent quantities)
N = "n"
SEED = "seed"
STEP = "step"
SAMPLE = "sample"

# data variables (measured quantities)
F_MEM = "f_mem"
F_MEM_SE = "f_mem_se"
TRAIN_LOSS = "train_loss"
TEST_LOSS = "test_loss"
RATIO = "ratio"
D1 = "d1"
D2 = "d2"
D_TEST = "d_test"
NEAREST = "nearest_train"
TAU_MEM = "tau_mem"
TAU_MEM_CENSORED = "tau_mem_censored"
TAU_MEM_EXPONENT = "tau_mem_exponent"
TAU_MEM_EXPONENT_CI = "tau_mem_exponent_ci"
TAU_MEM_PREFACTOR = "tau_mem_prefactor"
TAU_GEN = "tau_gen"
TAU_GEN_CENSORED = "tau_gen_censored"
TAU_GEN_EXPONENT = "tau_gen_exponent"
TAU_GEN_EXPONENT_CI = "tau_gen_exponent_ci"
TAU_GEN_PREFACTOR = "tau_gen_prefactor"
CI_BOUND = "bound"
# fit diagnostics: does a power law describe tau(n)? (scaling.py)
LEVEL = "level"
NORMALIZATION = "normalization"
TOLERANCE = "tolerance"
QUALITY_LEVEL = "quality_level"
QUALITY_TARGET = "quality_target"  # the metric's value at each quality level (a coordinate along it)
SEGMENT = "segment"
N_LO = "n_lo"
N_HI = "n_hi"
NORMALIZATIONS = ("raw", "final")  # f_mem as measured; f_mem / its final value (arXiv 2505.17638)
TAU_MEM_LEVELS = "tau_mem_levels"  # (normalization, level, n, seed), and the diagnostics below with this prefix
TAU_GEN_TOLERANCES = "tau_gen_tolerances"  # (tolerance, n, seed)
TAU_GEN_LEVELS = "tau_gen_levels"  # (quality_level, n, seed): at targets common to every run of the experiment
# suffixes of the diagnostics every fitted tau gets: f"{prefix}_{suffix}"
EXPONENT_CI_SEEDS = "exponent_ci_seeds"
LOCAL_SLOPE = "local_slope"
LOCAL_SLOPE_CI = "local_slope_ci"
LOF_PVALUE = "lof_pvalue"
LOF_RMS = "lof_rms"
POWER_LAW_OK = "power_law_ok"
TAU_MEM_LOCAL_SLOPE = f"{TAU_MEM}_{LOCAL_SLOPE}"
TAU_MEM_LOCAL_SLOPE_CI = f"{TAU_MEM}_{LOCAL_SLOPE_CI}"
TAU_MEM_LOF_PVALUE = f"{TAU_MEM}_{LOF_PVALUE}"
TAU_MEM_POWER_LAW_OK = f"{TAU_MEM}_{POWER_LAW_OK}"
TAU_GEN_POWER_LAW_OK = f"{TAU_GEN}_{POWER_LAW_OK}"
TAU_MEM_TIMES_WIDTH = "tau_mem_times_width"  # a width sweep's collapse (n, width, seed) and its joint fit
F_MEM_FINAL = "f_mem_final"
F_MEM_FINAL_SE = "f_mem_final_se"
N_STAR = "n_star"
N_HALF = "n_half"

# sweep dimensions (an experiment whose model.width or model.strength is a list)
WIDTH = "width"
# the random-features and linear_exact stages: data dimension d, psi_n = n / d, the RF time tau
DIM = "dim"
PSI_N = "psi_n"
TAU = "tau"
TAU_UNITS = "1"  # tau = step lr / d^2 is dimensionless (the long names say which time is meant)
SCORE_ERROR = "score_error"
TAU_SPLIT = "tau_split"
TAU_MEM_THEORY = "tau_mem_theory"
GAP_LEVEL = "gap_level"  # random features: the fraction of the final train-test gap a split time is read at
TAU_SPLIT_LEVELS = "tau_split_levels"  # (gap_level, n, seed): the time the gap reaches each level of its final value
RF_MODE = "rf_mode"  # random features: index of an eigenvalue of U (ascending)
U_EIGENVALUE = "u_eigenvalue"  # (rf_mode,): the spectrum of the noise-averaged U of one flow run
TAU_MEM_EDGE = "tau_mem_edge"  # (n, seed): psi_p / (Delta_t (lam + ridge)) at the lower edge of U's top n eigenvalues
# random features, issue 22: the losses with A restricted to the span of U's top-n eigenvectors (the theory's
# memorization bulk) and to its complement (the other p - n modes), and the split times read from those gaps
TRAIN_LOSS_BULK = "train_loss_bulk"
TEST_LOSS_BULK = "test_loss_bulk"
TRAIN_LOSS_OUTSIDE = "train_loss_outside"
TEST_LOSS_OUTSIDE = "test_loss_outside"
TAU_SPLIT_BULK = "tau_split_bulk"  # (n, seed)
TAU_SPLIT_OUTSIDE = "tau_split_outside"  # (n, seed)
N_HALF_CI = "n_half_ci"
P_DELTA_SE = "p_delta_pos_se"
TIKHONOV = "tikhonov"  # train.tikhonov swept: the Tikhonov penalty c of the training loss
STRENGTH = "strength"
N_PARAMS = "n_params"

# quality metrics (lower is better unless listed in HIGHER_IS_BETTER)
FD = "fd_{space}"
FD_HELDOUT = "fd_{space}_heldout"  # quality.baselines: held-out points against the reference (per run)
FD_TRAIN = "fd_{space}_train"  # quality.baselines: the training set, resampled, against the reference (per run)
KID = "kid_{space}"
E_TG = "e_tg"
E_OG = "e_og"
DELTA = "delta"
KL_GENERATED = "kl_generated"
DELTA_ORACLE = "delta_oracle"  # linear_exact: E_TG - E_OG of the population law itself (a perfect generalizer)
P_DELTA_POS_ORACLE = "p_delta_pos_oracle"
NUM_POPULATION = "num_population"  # linear_exact: the population size N of rho_O (a dimension)
P_DELTA_POS = "p_delta_pos"
LOGLIK = "loglik"
LOGLIK_TRUE = "loglik_true"
ENERGY = "energy_distance"
DENOISER_ERR_POP = "denoiser_err_pop"
DENOISER_ERR_EMP = "denoiser_err_emp"
PROBE_SIGMA = "probe_sigma"
HIGHER_IS_BETTER = (LOGLIK,)
# tau_gen's metric when fit.tau_gen_metric is "auto": the first of these the cube has
QUALITY_PREFERENCE = ("fd_inception", "fd_classifier", "loglik", "energy_distance", "fd_data")

# units are UDUNITS strings, as CF asks. Every quantity here is dimensionless: fractions, counts, optimizer
# steps, distances between data arrays (themselves unitless), log-likelihoods in nats, so "1", and the long
# name says what is counted
ATTRS: dict[str, dict[str, str]] = {
    N: {"long_name": "training-set size", "units": "1"},
    SEED: {"long_name": "seed of subset, initialisation and batch order", "units": "1"},
    STEP: {"long_name": "optimizer step of the checkpoint", "units": "1"},
    SAMPLE: {"long_name": "index of the generated sample (fixed initial noise)", "units": "1"},
    F_MEM: {"long_name": "fraction of memorized samples (d1/d2 below ratio_threshold)", "units": "1"},
    F_MEM_SE: {"long_name": "bootstrap standard error of f_mem", "units": "1"},
    TRAIN_LOSS: {"long_name": "denoising loss on the fixed training probe", "units": "1"},
    TEST_LOSS: {"long_name": "denoising loss on the fixed held-out probe", "units": "1"},
    RATIO: {"long_name": "distance to nearest over second-nearest training point (d1/d2)", "units": "1"},
    D1: {"long_name": "Euclidean distance to the nearest training point", "units": "1"},
    D2: {"long_name": "Euclidean distance to the second-nearest training point", "units": "1"},
    D_TEST: {"long_name": "Euclidean distance to the nearest held-out test point", "units": "1"},
    NEAREST: {"long_name": "pool index of the nearest training point", "units": "1"},
    TAU_MEM: {"long_name": "first step at which f_mem reaches tau_mem_threshold (log-step interpolated)", "units": "1"},
    TAU_MEM_CENSORED: {"long_name": "tau_mem not reached by the last checkpoint (tau_mem is NaN)", "units": "1"},
    TAU_MEM_EXPONENT: {"long_name": "exponent b of tau_mem = A n^b (least squares in log-log)", "units": "1"},
    TAU_MEM_EXPONENT_CI: {"long_name": "bootstrap-over-seeds confidence interval of b", "units": "1"},
    TAU_MEM_PREFACTOR: {"long_name": "prefactor A of tau_mem = A n^b", "units": "1"},
    CI_BOUND: {"long_name": "lower / upper bound of the confidence interval", "units": "1"},
    TAU_GEN: {"long_name": "first step at which the quality metric is within tolerance of its best (log-step interpolated)", "units": "1"},
    TAU_GEN_CENSORED: {"long_name": "tau_gen not reached (tau_gen is NaN)", "units": "1"},
    TAU_GEN_EXPONENT: {"long_name": "exponent b of tau_gen = A n^b (least squares in log-log)", "units": "1"},
    TAU_GEN_EXPONENT_CI: {"long_name": "bootstrap-over-seeds confidence interval of tau_gen's exponent", "units": "1"},
    TAU_GEN_PREFACTOR: {"long_name": "prefactor A of tau_gen = A n^b", "units": "1"},
    E_TG: {"long_name": "squared Hellinger distance between KDEs of training set and generated samples", "units": "1"},
    E_OG: {"long_name": "squared Hellinger distance between KDEs of population and generated samples", "units": "1"},
    DELTA: {"long_name": "E_TG - E_OG (positive: samples closer to the population than to the training set)", "units": "1"},
    P_DELTA_POS: {"long_name": "fraction of seeds with E_TG - E_OG > 0", "units": "1"},
    DELTA_ORACLE: {"long_name": "E_TG - E_OG for rho_G the population law itself (a perfect generalizer): the "
                                "estimator's control, positive when it calls that law a generalizer", "units": "1"},
    P_DELTA_POS_ORACLE: {"long_name": "1/2 + 1/2 mean over repeats of sign(delta_oracle): 1 where the estimator "
                                      "recognizes the population law as generalizing", "units": "1"},
    NUM_POPULATION: {"long_name": "population size N of the KDE rho_O (width sigma N^(-1/d))", "units": "1"},
    LOGLIK: {"long_name": "mean log-likelihood of generated samples under the true density, in nats", "units": "1"},
    LOGLIK_TRUE: {"long_name": "mean log-likelihood of fresh true samples under the true density, in nats", "units": "1"},
    ENERGY: {"long_name": "energy distance between generated and fresh true samples", "units": "1"},
    DENOISER_ERR_POP: {"long_name": "mean squared error of the denoiser against the population (true) denoiser", "units": "1"},
    DENOISER_ERR_EMP: {"long_name": "mean squared error of the denoiser against the empirical optimal denoiser", "units": "1"},
    PROBE_SIGMA: {"long_name": "noise level of the denoiser-error probe", "units": "1"},
    F_MEM_FINAL: {"long_name": "f_mem at the last checkpoint, mean over seeds", "units": "1"},
    F_MEM_FINAL_SE: {"long_name": "standard error over seeds of f_mem at the last checkpoint", "units": "1"},
    N_STAR: {"long_name": "largest n whose final f_mem (mean over seeds) reaches tau_mem_threshold", "units": "1"},
    N_HALF: {"long_name": "n at which P(E_TG - E_OG > 0) first rises through 1/2 (log-n interpolated)", "units": "1"},
    WIDTH: {"long_name": "MLP hidden width or U-Net base channels", "units": "1"},
    STRENGTH: {"long_name": "regularization strength (Tikhonov c, consistency floor tau or kernel bandwidth h)", "units": "1"},
    TIKHONOV: {"long_name": "Tikhonov penalty c on the trained network's score (train.tikhonov)", "units": "1"},
    N_PARAMS: {"long_name": "number of trainable parameters of the model", "units": "1"},
}


_DIAGNOSTIC_ATTRS = {
    "exponent": ("exponent b of {what} = A n^b (least squares in log-log)", "1"),
    "prefactor": ("prefactor A of {what} = A n^b", "1"),
    "exponent_ci": ("bootstrap CI of b resampling the n points and the seeds (widens when the points scatter about the law beyond seed noise)", "1"),
    EXPONENT_CI_SEEDS: ("bootstrap CI of b resampling the seeds only (seed scatter alone)", "1"),
    LOCAL_SLOPE: ("slope of the per-n mean log {what} between consecutive n", "1"),
    LOCAL_SLOPE_CI: ("Welch t confidence interval of the local slope from the seed scatter at both ends", "1"),
    LOF_PVALUE: ("p-value of the lack-of-fit F test: per-n mean log {what} about the power law against the seed scatter", "1"),
    LOF_RMS: ("root mean square distance of the per-n mean natural log of {what} from the fitted line", "1"),
    POWER_LAW_OK: ("1 when a power law describes {what} (criterion in the attrs power_law_criterion)", "1"),
    "censored": ("{what} not reached by the last checkpoint (NaN)", "1"),
}
# the suffixes of every fitted tau's diagnostics (fit.nc keeps each tau's in its own group: diffmem.fitfile)
DIAGNOSTICS = tuple(_DIAGNOSTIC_ATTRS)
for _prefix, _what in ((TAU_MEM, "tau_mem"), (TAU_GEN, "tau_gen"), (TAU_MEM_LEVELS, "tau_mem at each level"),
                       (TAU_GEN_TOLERANCES, "tau_gen at each tolerance"),
                       (TAU_GEN_LEVELS, "tau_gen at each common quality level"), (TAU_MEM_TIMES_WIDTH, "tau_mem * width over all widths"),
                       ("tau_split", "the random-features split time")):  # rf.TAU_SPLIT
    for _suffix, (_long, _units) in _DIAGNOSTIC_ATTRS.items():
        ATTRS.setdefault(f"{_prefix}_{_suffix}", {"long_name": _long.format(what=_what), "units": _units})
for _suffix, (_long, _units) in _DIAGNOSTIC_ATTRS.items():  # random features: the split time per gap level
    ATTRS.setdefault(f"{TAU_SPLIT_LEVELS}_{_suffix}", {"long_name": _long.format(what="the split time at each gap level"),
                                                       "units": _units})
for _prefix, _what in ((TAU_SPLIT_BULK, "the split time of the bulk-only gap"),  # random features, by modes of U
                       (TAU_SPLIT_OUTSIDE, "the split time of the gap outside the bulk")):
    for _suffix, (_long, _units) in _DIAGNOSTIC_ATTRS.items():
        ATTRS.setdefault(f"{_prefix}_{_suffix}", {"long_name": _long.format(what=_what), "units": _units})
ATTRS.update({
    GAP_LEVEL: {"long_name": "fraction of the final train-test gap at which the split time is read", "units": "1"},
    RF_MODE: {"long_name": "index of an eigenvalue of U, ascending", "units": "1"},
    TAU_MEM_LEVELS: {"long_name": "first step at which f_mem (raw, or divided by its final value) reaches the level", "units": "1"},
    f"{TAU_MEM_TIMES_WIDTH}_collapse_pvalue": {
        "long_name": "p-value of an F test that tau_mem * width differs between widths (small: no collapse)", "units": "1"},
    TAU_MEM_TIMES_WIDTH: {"long_name": "tau_mem times the width (collapses across widths when tau_mem is proportional to n / W)", "units": "1"},
    TAU_GEN_TOLERANCES: {"long_name": "first step at which the quality metric is within the tolerance of its best", "units": "1"},
    LEVEL: {"long_name": "f_mem level at which tau_mem is read (of f_mem, or of f_mem / final f_mem)", "units": "1"},
    NORMALIZATION: {"long_name": "raw: f_mem as measured; final: f_mem divided by the run's final f_mem", "units": "1"},
    TOLERANCE: {"long_name": "fraction of the quality metric's first-to-best gap left at tau_gen", "units": "1"},
    TAU_GEN_LEVELS: {"long_name": "first step at which the quality metric reaches the experiment-wide target of the "
                                  "quality level (the same target for every run)", "units": "1"},
    QUALITY_TARGET: {"long_name": "value of the quality metric every run must reach at this quality level", "units": "1"},
    QUALITY_LEVEL: {"long_name": "fraction q of the experiment-wide quality gap left at the target: target = best + "
                                 "q (first - best), first = median value at the first checkpoint over runs, best = "
                                 "best value of any run", "units": "1"},
    SEGMENT: {"long_name": "index of the pair of consecutive n of a local slope", "units": "1"},
    N_LO: {"long_name": "smaller n of the segment", "units": "1"},
    N_HI: {"long_name": "larger n of the segment", "units": "1"},
})
ATTRS[TAU_MEM_EXPONENT_CI]["long_name"] = _DIAGNOSTIC_ATTRS["exponent_ci"][0]
ATTRS[TAU_GEN_EXPONENT_CI]["long_name"] = _DIAGNOSTIC_ATTRS["exponent_ci"][0]


def annotate(ds):
    """Attach long_name and units to every known coordinate and variable of an xarray Dataset."""
    for name in list(ds.variables):
        if name in ATTRS:
            ds[name].attrs.update(ATTRS[name])
    return ds


# --- Per-training-example copies and the twin-model test (issue 14) --------------------------------
# train_index i is the i-th point of a run's training set, i.e. position i of its seed's permutation
# of the pool: the sets are nested across n, so train_index i is the same pool point at every n of
# one seed (train_pool_index gives it).
TRAIN_INDEX = "train_index"
TRAIN_POOL_INDEX = "train_pool_index"
COPY_COUNT = "copy_count"
FIRST_COPY_STEP = "first_copy_step"
TRAIN_NN_DISTANCE = "train_nn_distance"
TRAIN_MEAN_DISTANCE = "train_mean_distance"
# twin models (Kadkhodaie, Guth, Simoncelli & Mallat, ICLR 2024): a second model per (n, seed) trained
# on a disjoint training set of the same size, sampled from the same initial noise
TWIN_DISTANCE = "twin_distance"
TWIN_D1 = "twin_d1"
TWIN_CLOSER = "twin_closer"

ATTRS.update({
    TRAIN_INDEX: {"long_name": "position in the run's training set (= position in its seed's pool permutation)", "units": "1"},
    TRAIN_POOL_INDEX: {"long_name": "pool index of the training point", "units": "1"},
    COPY_COUNT: {"long_name": "memorized samples whose nearest training point this is, at the last checkpoint", "units": "1"},
    FIRST_COPY_STEP: {"long_name": "first checkpoint step at which a memorized sample copies this training point (NaN: never)", "units": "1"},
    TRAIN_NN_DISTANCE: {"long_name": "Euclidean distance of the training point to its nearest other training point", "units": "1"},
    TRAIN_MEAN_DISTANCE: {"long_name": "Euclidean distance of the training point to the training-set mean", "units": "1"},
    TWIN_DISTANCE: {"long_name": "distance between the samples of the model and its twin from the same initial noise", "units": "1"},
    TWIN_D1: {"long_name": "distance of the twin model's sample to the twin's nearest training point", "units": "1"},
    TWIN_CLOSER: {"long_name": "fraction of sample pairs closer to each other than either is to its own nearest training point", "units": "1"},
})

# indices and counts: written as int32 with _FillValue -1 (diffmem.io.netcdf_encoding), so what an outer
# join pads (NaN in memory) stays integer on disk; xarray's default decoding reads them as float64 with NaN
INTEGER_VARIABLES = (NEAREST, TRAIN_POOL_INDEX, COPY_COUNT, FIRST_COPY_STEP)
