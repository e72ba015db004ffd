"""Percentile bootstrap confidence intervals over prompts (cluster bootstrap: a prompt's images move together)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Rows = Sequence[Mapping[str, Any]]


def bootstrap_ci(rows: Rows, statistic: Callable[[Rows], float], *, cluster_key: str = "prompt_id",
                 strata_key: str | None = None, num_samples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """``(low, high)`` of ``statistic`` over prompt-resampled copies of ``rows``.

    Prompts are drawn with replacement (within each stratum when ``strata_key`` is given, so every task keeps its
    size, as the GenEval overall score needs); randomness from ``numpy.random.default_rng(seed)``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not rows:
        raise ValueError("no rows to bootstrap")
    clusters: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        clusters.setdefault(str(row[cluster_key]), []).append(row)
    strata: dict[str, list[str]] = {}
    for key, members in clusters.items():
        strata.setdefault(str(members[0].get(strata_key, "")) if strata_key else "", []).append(key)
    rng = np.random.default_rng(seed)
    values = np.empty(num_samples)
    for i in range(num_samples):
        sample: list[Mapping[str, Any]] = []
        for keys in strata.values():
            for j in rng.integers(0, len(keys), len(keys)):
                sample.extend(clusters[keys[j]])
        values[i] = statistic(sample)
    alpha = (1 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))
