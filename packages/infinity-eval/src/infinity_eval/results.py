"""What an evaluation run produces: per-metric results and the finished suite (shared by the runner and tracking)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MetricResult", "SuiteResult", "rows_table"]


@dataclass
class MetricResult:
    """One metric of one benchmark: aggregate metrics, bootstrap CI of the headline, per-image rows."""

    benchmark: str
    metric: str
    metrics: dict[str, float]
    headline: float | None
    ci95: tuple[float, float] | None
    rows: list[dict[str, Any]] = field(repr=False)
    num_images: int = 0
    image_paths: list[Path] = field(default_factory=list, repr=False)


@dataclass
class SuiteResult:
    """A finished run."""

    suite: str
    out: Path
    complete: bool
    params: dict[str, str]
    results: list[MetricResult]
    image_roots: dict[str, Path]

    def flat_metrics(self) -> dict[str, float]:
        """All metric values plus ``…/ci95_low`` / ``…/ci95_high`` of each headline."""
        out: dict[str, float] = {}
        for r in self.results:
            out.update(r.metrics)
            if r.ci95 is not None:
                out[f"{r.metric}/ci95_low"], out[f"{r.metric}/ci95_high"] = r.ci95
        return out


def rows_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without bulky columns (FID features), for tables."""
    return [{k: v for k, v in r.items() if k != "features"} for r in rows]
