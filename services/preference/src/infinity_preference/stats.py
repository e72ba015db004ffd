"""The study's statistics: per-pair consensus, win/tie/loss rates with bootstrap CIs, and rater agreement.

Labels are in model order: ``"a"`` = the pair's first model wins, ``"b"`` = the second wins, ``"tie"``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from infinity_eval.bootstrap import bootstrap_ci

__all__ = ["LABELS", "cohen_kappa", "consensus", "fleiss_kappa", "percent_agreement", "win_tie_loss"]

LABELS = ("a", "b", "tie")


def consensus(labels: Sequence[str], raters: int = 2) -> str | None:
    """The pair's verdict from its ratings in the order they were given (paper §4: two raters, a third on
    disagreement): the first ``raters`` when they all agree; else the strict majority of the first ``raters + 1``
    ("tie" when there is none); ``None`` while undecided (too few ratings, or a disagreement and no extra rating yet)."""
    if len(labels) < raters:
        return None
    if len(set(labels[:raters])) == 1:
        return labels[0]
    if len(labels) < raters + 1:
        return None
    label, count = Counter(labels[: raters + 1]).most_common(1)[0]
    return label if 2 * count > raters + 1 else "tie"


def win_tie_loss(
    rows: Sequence[Mapping[str, Any]], *, num_samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Rates of "a" (win of the first model), "tie" and "b" (loss) over ``rows`` (each with ``outcome`` and
    ``prompt_id``), each with a percentile bootstrap CI that resamples prompts (a prompt's samples move together)."""
    count = len(rows)
    out: dict[str, Any] = {"n": count}
    for name, label in (("win", "a"), ("tie", "tie"), ("loss", "b")):
        rate = sum(r["outcome"] == label for r in rows) / count if count else None
        ci = None
        if count and num_samples > 0:
            low, high = bootstrap_ci(rows, lambda rs, lb=label: sum(r["outcome"] == lb for r in rs) / len(rs),
                                     cluster_key="prompt_id", num_samples=num_samples, confidence=confidence,
                                     seed=seed)  # fmt: skip
            ci = [low, high]
        out[name] = {"rate": rate, "ci": ci}
    return out


def percent_agreement(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Share of items on which two ratings agree (None for no items)."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} vs {len(second)} ratings")
    return sum(a == b for a, b in zip(first, second)) / len(first) if first else None


def cohen_kappa(first: Sequence[str], second: Sequence[str], labels: Sequence[str] = LABELS) -> float | None:
    """Cohen's kappa of two rating sequences: (p_o - p_e) / (1 - p_e) with p_e from each side's label shares.
    None when undefined (no items, or both sides use one and the same label throughout)."""
    agreement = percent_agreement(first, second)
    if agreement is None:
        return None
    n = len(first)
    expected = sum((first.count(label) / n) * (second.count(label) / n) for label in labels)
    if expected >= 1.0:
        return None
    return (agreement - expected) / (1.0 - expected)


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa of an items x categories table of rating counts (every item rated by the same number of
    raters, at least two). None when undefined (no items, or every rating in one category)."""
    if not counts:
        return None
    raters = sum(counts[0])
    if raters < 2 or any(sum(row) != raters for row in counts):
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    items = len(counts)
    shares = [sum(row[j] for row in counts) / (items * raters) for j in range(len(counts[0]))]
    observed = sum((sum(c * c for c in row) - raters) / (raters * (raters - 1)) for row in counts) / items
    expected = sum(p * p for p in shares)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)
