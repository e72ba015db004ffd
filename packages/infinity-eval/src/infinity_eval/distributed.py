"""Scoring on a Ray cluster with Ray Data: one metric instance per actor, fixed chunks, streamed results.

Items are split into fixed chunks (by canonical index) before distribution and each chunk is scored whole by one
actor, so every row is computed from the same inputs in the same batch whatever the number of workers; the driver
re-orders rows by chunk index. Only the driver writes files or talks to MLflow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from infinity_run.reaper import start_reaper

from infinity_eval.benchmarks import SampleRef
from infinity_eval.scorers import MetricSpec, build_metric
from infinity_eval.weights import WeightsConfig

logger = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - needs the extra
        raise ImportError("distributed scoring needs Ray: pip install 'infinity-eval[ray]'") from exc
    return ray


class _ChunkScorer:
    """Ray Data actor: builds the metric once, scores whole chunks."""

    def __init__(self, spec: MetricSpec, weights: WeightsConfig, chunks: Sequence[Sequence[SampleRef]],
                 cache_dir: str | None) -> None:
        self.metric = build_metric(spec, weights, cache_dir=Path(cache_dir) if cache_dir else None)
        self.chunks = chunks

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        ids = [int(i) for i in batch["chunk"]]
        return {"chunk": ids, "rows": [json.dumps(self.metric.score(self.chunks[i])) for i in ids]}


def score_chunks_ray(spec: MetricSpec, weights: WeightsConfig, chunks: Sequence[Sequence[SampleRef]],
                     todo: Sequence[int], *, workers: int, cache_dir: Path | None = None,
                     num_gpus_per_worker: float = 0.0) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Yield ``(chunk index, rows)`` for the chunks in ``todo`` as actors finish them (any order)."""
    ray = _ray()
    if not ray.is_initialized():
        # Connects to $RAY_ADDRESS when set (a cluster), else starts a local instance with all cores.
        ray.init(include_dashboard=False, log_to_driver=False)
        start_reaper()  # a killed driver leaves no Ray process behind
    ds = ray.data.from_items([{"chunk": i} for i in todo], override_num_blocks=max(1, min(len(todo), workers * 4)))
    scored = ds.map_batches(
        _ChunkScorer,
        fn_constructor_kwargs={"spec": spec, "weights": weights, "chunks": list(chunks),
                               "cache_dir": str(cache_dir) if cache_dir else None},
        batch_size=1, concurrency=workers, num_cpus=1, num_gpus=num_gpus_per_worker or None,
    )
    for row in scored.iter_rows():
        yield int(row["chunk"]), json.loads(row["rows"])
