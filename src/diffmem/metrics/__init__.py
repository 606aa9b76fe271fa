"""Sample-quality metrics: distances between sets (FD, KID, energy, SW), kernel density
divergences (E_TG, E_OG), exact densities and denoisers of the synthetic data, and feature
extractors (data, small classifier, Inception-v3) for FD/KID.

Submodules: `distances`, `kde`, `exact`, `features`; the main functions are re-exported here.
"""

from diffmem.metrics import distances, exact, features, kde
from diffmem.metrics.distances import (
    energy_distance,
    frechet_distance,
    gaussian_frechet,
    kernel_inception_distance,
    mmd2_polynomial,
    sliced_wasserstein,
)
from diffmem.metrics.exact import IsotropicGaussian, SymmetricGMM, denoiser_errors, empirical_denoiser, mean_loglik
from diffmem.metrics.features import (
    DigitClassifier,
    InceptionV3Features,
    classifier_accuracy,
    classifier_features,
    extract_features,
    load_classifier,
    load_inception,
    save_classifier,
    train_classifier,
)
from diffmem.metrics.kde import (
    KDE,
    CallableDensity,
    Density,
    bandwidth,
    e_tg_e_og,
    hellinger_sq,
    kde_logpdf,
    kl_divergence,
)

__all__ = [
    "distances", "exact", "features", "kde",
    "energy_distance", "frechet_distance", "gaussian_frechet", "kernel_inception_distance", "mmd2_polynomial",
    "sliced_wasserstein",
    "IsotropicGaussian", "SymmetricGMM", "denoiser_errors", "empirical_denoiser", "mean_loglik",
    "DigitClassifier", "InceptionV3Features", "classifier_accuracy", "classifier_features", "extract_features",
    "load_classifier", "load_inception", "save_classifier", "train_classifier",
    "KDE", "CallableDensity", "Density", "bandwidth", "e_tg_e_og", "hellinger_sq", "kde_logpdf", "kl_divergence",
]
