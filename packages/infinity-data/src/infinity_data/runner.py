"""The curation job: discover shards, skip committed ones, stream the rest through the stages, commit in order.

Two executors share every stage and the commit code:

* ``"ray"`` -- Ray Data: ``from_items(shards) -> flat_map(read) -> map_batches(metadata, tasks) ->
  map_batches(OcrStage, actor pool) -> map_batches(ModelStage, actor pool, GPUs) -> iter_batches`` on the driver,
  which reassembles shards and commits them. ``preserve_order`` keeps shards arriving in input order, so
  duplicate decisions (first occurrence wins) are the same in every run, killed or not.
* ``"local"`` -- the same stages in-process, shard by shard (tests, debugging, tiny jobs).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from infinity_run.reaper import start_reaper
from infinity_run.tracking import tracker_for

from .commit import OutputLayout, commit_shard
from .config import CurateConfig
from .filters.dedup import DedupState
from .report import log_report, run_params, write_report
from .shards import ShardRef, discover_shards, iter_shard
from .splits import finalize_splits
from .stages import ModelStage, OcrStage, from_rows, metadata_stage, to_rows

__all__ = ["CurateResult", "curate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CurateResult:
    """What a run did; ``report`` is the aggregated report of all committed shards."""

    output: str
    shards_total: int
    shards_processed: int
    shards_skipped: int
    wall_seconds: float
    report: dict[str, Any]


def _progress(config: CurateConfig, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="shard", disable=not config.progress)


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    rows = iter(rows)
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def _run_local(config: CurateConfig, pending: list[ShardRef]) -> Iterator[tuple[ShardRef, list[dict[str, Any]]]]:
    filters = config.filters
    ocr = OcrStage(config) if filters.is_on("ocr") else None
    models = ModelStage(config) if any(filters.is_on(n) for n in ("watermark", "aesthetic")) else None
    for ref in pending:
        done: list[dict[str, Any]] = []
        for chunk in _batches(iter_shard(ref), config.ray.batch_size):
            batch = metadata_stage(from_rows(chunk), config)
            if ocr is not None:
                batch = ocr(batch)
            if models is not None:
                batch = models(batch)
            done.extend(to_rows(batch))
        yield ref, done


def _read_for_ray(row: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return iter_shard(ShardRef.from_row(row))


def _run_ray(config: CurateConfig, pending: list[ShardRef]) -> Iterator[tuple[ShardRef, list[dict[str, Any]]]]:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError("executor='ray' needs Ray Data: pip install 'infinity-data[ray]' (or set executor='local')") from exc
    level = getattr(logging, config.ray.log_level.upper())
    for name in ("ray", "ray.data"):  # Ray Data logs through its own logger, configured at import
        logging.getLogger(name).setLevel(level)
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": level}
        if config.ray.address:
            kwargs["address"] = config.ray.address
        elif config.ray.num_cpus:
            kwargs["num_cpus"] = config.ray.num_cpus
        ray.init(**kwargs)
        start_reaper(address=config.ray.address or None)  # a killed driver leaves no Ray process behind
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = config.progress
    filters = config.filters
    by_index = {ref.index: ref for ref in pending}
    ds = ray.data.from_items([ref.as_row() for ref in pending], override_num_blocks=len(pending))
    ds = ds.flat_map(_read_for_ray)
    meta_kwargs: dict[str, Any] = {"fn_kwargs": {"config": config}, "batch_size": config.ray.batch_size,
                                   "batch_format": "numpy"}
    if config.ray.metadata_concurrency:
        meta_kwargs["concurrency"] = config.ray.metadata_concurrency
    ds = ds.map_batches(metadata_stage, **meta_kwargs)
    if filters.is_on("ocr"):
        ds = ds.map_batches(
            OcrStage, fn_constructor_kwargs={"config": config}, batch_size=config.ray.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=filters.ocr.num_actors), num_cpus=filters.ocr.num_threads,
        )
    if any(filters.is_on(n) for n in ("watermark", "aesthetic")):
        ds = ds.map_batches(
            ModelStage, fn_constructor_kwargs={"config": config}, batch_size=config.ray.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=config.ray.model_actors), num_gpus=config.ray.model_num_gpus or None,
        )
    buffers: dict[int, list[dict[str, Any]]] = {}
    expected: dict[int, int] = {}
    order = [ref.index for ref in pending]
    position = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for row in to_rows(batch):
            index = int(row["shard_index"])
            buffers.setdefault(index, []).append(row)
            if int(row["shard_size"]):  # only a shard's last row knows the shard's size (rows are streamed)
                expected[index] = int(row["shard_size"])
        # Commit complete shards strictly in input order (deterministic dedup).
        while position < len(order) and len(buffers.get(order[position], ())) == expected.get(order[position], -1):
            index = order[position]
            yield by_index[index], buffers.pop(index)
            position += 1
    if position != len(order):
        missing = [by_index[i].name for i in order[position:]]
        raise RuntimeError(f"Ray pipeline ended before shards {missing[:5]} completed")


def curate(config: CurateConfig) -> CurateResult:
    """Run (or resume) a curation job; returns counts and the report. Re-running a finished job is a quick no-op."""
    start = time.perf_counter()
    shards = discover_shards(config.input)
    layout = OutputLayout(config.output.path)
    committed = layout.committed() if layout.stats.is_dir() else set()
    pending = [ref for ref in shards if ref.name not in committed]
    report_file = layout.report / "report.json"
    if not pending and report_file.is_file():
        report = json.loads(report_file.read_text())
        if report.get("totals", {}).get("shards") == len(shards):
            logger.info("all %d shards of %s are committed; nothing to do", len(shards), layout.root)
            return CurateResult(output=str(layout.root), shards_total=len(shards), shards_processed=0,
                                shards_skipped=len(shards), wall_seconds=time.perf_counter() - start, report=report)
    config.filters.check_files()
    layout.prepare(config)
    # The tracker opens after the checks above, so a run that cannot start leaves no empty MLflow run.
    tracker = tracker_for(config.tracking, layout.root)
    tracker.set_tags({"output": str(layout.root)})
    tracker.log_params(run_params(config))
    try:
        result = _curate(config, layout, shards, committed, pending, start)
    except BaseException:
        tracker.finish("FAILED")
        raise
    log_report(tracker, result.report, layout.report)
    tracker.finish()
    return result


def _curate(config: CurateConfig, layout: OutputLayout, shards: list[ShardRef], committed: set[str],
            pending: list[ShardRef], start: float) -> CurateResult:
    names = [ref.name for ref in shards]
    logger.info("%d shards: %d committed, %d to do", len(shards), len(shards) - len(pending), len(pending))
    dedup = None
    if config.filters.is_on("dedup"):
        dedup = DedupState(config.filters.dedup)
        for ref in shards:  # replay what committed shards kept, in input order
            if ref.name in committed:
                dedup.replay((sha, int(ph, 16) if ph else None, cap) for sha, ph, cap in layout.load_stats(ref.name)["kept_hashes"])
    processed = 0
    if pending:
        runner = _run_ray if config.executor == "ray" else _run_local
        running = {"kept": 0, "dropped": 0, "errors": 0}  # totals over the shards this run committed
        with _progress(config, len(pending), "curate") as bar:
            for ref, rows in runner(config, pending):
                stats = commit_shard(ref, rows, config, layout, dedup)
                processed += 1
                running["kept"] += stats["kept"]
                running["dropped"] += stats["dropped"]
                running["errors"] += sum(stats["errors"].values())
                bar.update(1)
                bar.set_postfix(running)
    splits = finalize_splits(layout, names) if config.output.write_splits else None
    wall = time.perf_counter() - start
    run = {"shards_processed": processed, "shards_skipped": len(shards) - len(pending), "wall_seconds": wall,
           "executor": config.executor}
    report = write_report(config, layout, names, run, splits)
    return CurateResult(output=str(layout.root), shards_total=len(shards), shards_processed=processed,
                        shards_skipped=len(shards) - len(pending), wall_seconds=wall, report=report)

