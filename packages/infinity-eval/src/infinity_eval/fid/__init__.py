"""FID / KID: Inception pool3 features, resize conventions, exact mergeable statistics, Fréchet distance."""

from infinity_eval.fid.compute import FIDResult, compute_fid, extract_features, folder_stats
from infinity_eval.fid.inception import FIDInceptionV3, load_fid_inception
from infinity_eval.fid.preprocess import FID_MODES, preprocess_for_fid
from infinity_eval.fid.stats import FeatureStats, fid_from_stats, frechet_distance, kernel_inception_distance

__all__ = [
    "FID_MODES",
    "FIDInceptionV3",
    "FIDResult",
    "FeatureStats",
    "compute_fid",
    "extract_features",
    "fid_from_stats",
    "folder_stats",
    "frechet_distance",
    "kernel_inception_distance",
    "load_fid_inception",
    "preprocess_for_fid",
]
