"""Mergeable feature statistics, the Fréchet distance and the kernel (KID) distance.

Exactness across workers: every feature is quantised to a fixed grid of ``2**-QUANT_BITS`` (≤ 3.1e-5 absolute, far
below pool3 feature noise) and the first and second moments are accumulated as int64. Within a chunk of at most
``CHUNK_ROWS`` rows the outer-product sum is a float64 matmul of integer-valued matrices whose partial sums stay below
2**53, so it is exact whatever order BLAS adds in; across chunks, shards and workers the int64 sums are associative.
Hence merged statistics are bit-identical to single-process statistics for any split, order or worker count. Mean and
covariance are then derived in float64.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

QUANT_BITS = 14
MAX_ABS_FEATURE = 64.0  # |x| * 2**14 < 2**20, so products < 2**40 and 2**13 of them stay below 2**53
CHUNK_ROWS = 4096
MAX_SAMPLES = 2**23  # int64 headroom for sums of 2**40-sized products


def quantise_features(features_ND: np.ndarray) -> np.ndarray:
    """Features on the exact-accumulation grid, as float64 integers ``round(x * 2**QUANT_BITS)``."""
    x = np.asarray(features_ND, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or Inf; check the feature extractor and its weights")
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak >= MAX_ABS_FEATURE:
        raise ValueError(
            f"feature magnitude {peak:.3g} exceeds {MAX_ABS_FEATURE}, the range of exact accumulation; "
            "this is not a pool3 feature of a correctly loaded FID Inception"
        )
    return np.rint(x * 2.0**QUANT_BITS)


@dataclass(kw_only=True)
class FeatureStats:
    """Sufficient statistics of a feature set: count, int64 sum and int64 sum of outer products (quantised units)."""

    dim: int
    count: int = 0
    sum_D: np.ndarray = field(default=None)  # type: ignore[assignment]
    outer_DD: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.dim <= 0:
            raise ValueError(f"dim must be positive, got {self.dim}")
        if self.sum_D is None:
            self.sum_D = np.zeros(self.dim, dtype=np.int64)
        if self.outer_DD is None:
            self.outer_DD = np.zeros((self.dim, self.dim), dtype=np.int64)
        if self.sum_D.shape != (self.dim,) or self.outer_DD.shape != (self.dim, self.dim):
            raise ValueError("sum_D / outer_DD shapes do not match dim")

    @classmethod
    def from_features(cls, features_ND: np.ndarray) -> FeatureStats:
        """Statistics of one feature array ``(N, D)``."""
        features_ND = np.asarray(features_ND)
        stats = cls(dim=features_ND.shape[1])
        stats.update(features_ND)
        return stats

    def update(self, features_ND: np.ndarray) -> None:
        """Add a batch of features ``(N, D)`` in place."""
        q = quantise_features(features_ND)
        if q.shape[1] != self.dim:
            raise ValueError(f"features have dim {q.shape[1]}, statistics have dim {self.dim}")
        if self.count + q.shape[0] > MAX_SAMPLES:
            raise ValueError(f"more than {MAX_SAMPLES} samples in one FeatureStats; split the reference set")
        for start in range(0, q.shape[0], CHUNK_ROWS):
            chunk = q[start : start + CHUNK_ROWS]
            # Integer-valued float64 with partial sums < 2**53: the matmul is exact.
            self.outer_DD += (chunk.T @ chunk).astype(np.int64)
            self.sum_D += chunk.sum(axis=0).astype(np.int64)
        self.count += q.shape[0]

    def merge(self, other: FeatureStats) -> FeatureStats:
        """A new object holding the union of both sets (exact; order does not matter)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dim {self.dim} and {other.dim}")
        return FeatureStats(dim=self.dim, count=self.count + other.count, sum_D=self.sum_D + other.sum_D,
                            outer_DD=self.outer_DD + other.outer_DD)

    @property
    def mean(self) -> np.ndarray:
        """Float64 mean ``(D,)``."""
        if self.count == 0:
            raise ValueError("no features accumulated")
        return self.sum_D.astype(np.float64) / (self.count * 2.0**QUANT_BITS)

    @property
    def cov(self) -> np.ndarray:
        """Float64 unbiased covariance ``(D, D)`` (divides by N - 1, as numpy.cov)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
        scale = 2.0**QUANT_BITS
        s = self.sum_D.astype(np.float64) / scale
        outer = self.outer_DD.astype(np.float64) / (scale * scale)
        return (outer - np.outer(s, s) / self.count) / (self.count - 1)

    def digest(self) -> str:
        """sha256 of the exact statistics, for lineage and cache keys."""
        h = hashlib.sha256()
        h.update(np.int64(self.count).tobytes())
        h.update(self.sum_D.tobytes())
        h.update(self.outer_DD.tobytes())
        return h.hexdigest()

    def save(self, path: str | Path, **metadata: str) -> None:
        """Write an ``.npz`` with the exact sums plus string metadata (extractor id, preprocessing mode, ...)."""
        buf = io.BytesIO()
        np.savez(buf, count=np.int64(self.count), sum_D=self.sum_D, outer_DD=self.outer_DD,
                 **{f"meta_{k}": np.array(v) for k, v in metadata.items()})
        Path(path).write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: str | Path, **expected: str) -> FeatureStats:
        """Read :meth:`save` output; refuse files whose metadata differ from ``expected`` (e.g. another FID mode)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"feature statistics not found: {path}")
        with np.load(path, allow_pickle=False) as data:
            for key, value in expected.items():
                stored = str(data[f"meta_{key}"]) if f"meta_{key}" in data else None
                if stored != value:
                    raise ValueError(f"{path} was computed with {key}={stored!r}, expected {value!r}; recompute it")
            return cls(dim=int(data["sum_D"].shape[0]), count=int(data["count"]), sum_D=data["sum_D"].astype(np.int64),
                       outer_DD=data["outer_DD"].astype(np.int64))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 - mu2||² + tr(S1) + tr(S2) - 2 tr((S1 S2)^½)``. The trace of the matrix square root is the sum of
    square roots of the eigenvalues of ``S1 S2``, which equal those of the symmetric PSD matrix
    ``S1^½ S2 S1^½``; computing it that way (eigh, clipped at 0) never produces complex values or NaN, even for
    rank-deficient covariances (N < D), unlike ``scipy.linalg.sqrtm``.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    for name, arr in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or Inf")
    diff = mu1 - mu2
    sym1 = (sigma1 + sigma1.T) / 2
    sym2 = (sigma2 + sigma2.T) / 2
    w1, v1 = np.linalg.eigh(sym1)
    sqrt1 = (v1 * np.sqrt(np.clip(w1, 0.0, None))) @ v1.T
    inner = sqrt1 @ sym2 @ sqrt1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    value = float(diff @ diff + np.trace(sym1) + np.trace(sym2) - 2.0 * tr_covmean)
    # Tiny negative values are rounding of an exact 0 (identical inputs).
    return max(value, 0.0)


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between two :class:`FeatureStats`."""
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def kernel_inception_distance(
    features1_ND: np.ndarray,
    features2_MD: np.ndarray,
    *,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Unbiased KID (MMD² with the cubic polynomial kernel ``(x·y/d + 1)³``) as (mean, std) over random subsets.

    Same estimator as clean-fid's ``kernel_distance``; subsets are drawn from ``numpy.random.default_rng(seed)``.
    """
    x_all = np.asarray(features1_ND, np.float64)
    y_all = np.asarray(features2_MD, np.float64)
    if x_all.ndim != 2 or y_all.ndim != 2 or x_all.shape[1] != y_all.shape[1]:
        raise ValueError(f"feature shapes {x_all.shape} and {y_all.shape} are incompatible")
    d = x_all.shape[1]
    m = min(x_all.shape[0], y_all.shape[0], max_subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        x = x_all[rng.choice(x_all.shape[0], m, replace=False)]
        y = y_all[rng.choice(y_all.shape[0], m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        same = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values[i] = same - 2.0 * kxy.sum() / (m * m)
    return float(values.mean()), float(values.std())
