"""Exactly-once output per input shard.

Layout of ``output.path``::

    run.json                      settings fingerprint (a changed config cannot silently mix into old output)
    shards/<shard>.tar            kept samples (deterministic bytes)
    stats/<shard>.stats.json      per-shard counts, histograms, timings -- THE commit marker, written last
    images/<shard>/<key>.<ext>    (write_splits) materialised images for the official jsonl loader
    split_parts/<shard>.jsonl     (write_splits) this shard's split lines, merged into splits/ at the end
    splits/<t>_<count>.jsonl      (write_splits) official split files
    report/                       run report (JSON, Markdown, PNG histograms)

Every file is written under a temporary name and renamed into place (atomic on POSIX), and the stats file is renamed
last, so a shard either has its stats file -- and then all of its output is complete -- or is redone from scratch.
Re-doing a shard rewrites identical bytes, so at-least-once execution yields exactly-once output files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .config import CurateConfig
from .filters import SCORE_RANGES
from .filters.dedup import DedupState, caption_digest
from .shards import KeptSample, ShardRef, sample_metadata, write_tar

__all__ = ["OutputLayout", "commit_shard", "config_fingerprint", "shard_stats"]

logger = logging.getLogger(__name__)
_TMP_MARK = ".tmp-"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{_TMP_MARK}{path.name}.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def config_fingerprint(config: CurateConfig) -> dict[str, Any]:
    """The settings that determine output content (inputs, decode, filters, split options) and their hash."""
    relevant = {
        "input": asdict(config.input),
        "decode": asdict(config.decode),
        "filters": asdict(config.filters),
        "output": {"write_splits": config.output.write_splits, "split_image_paths": config.output.split_image_paths},
    }
    text = json.dumps(relevant, sort_keys=True, default=str)
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "settings": json.loads(text)}


class OutputLayout:
    """Paths of an output folder and its commit markers."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.shards = self.root / "shards"
        self.stats = self.root / "stats"
        self.images = self.root / "images"
        self.split_parts = self.root / "split_parts"
        self.splits = self.root / "splits"
        self.report = self.root / "report"

    def prepare(self, config: CurateConfig) -> None:
        """Create folders, remove leftovers of killed attempts, and check the settings fingerprint."""
        for folder in (self.shards, self.stats, self.images, self.split_parts, self.splits, self.report):
            folder.mkdir(parents=True, exist_ok=True)
        for folder in (self.root, self.shards, self.stats, self.images, self.split_parts, self.splits, self.report):
            for leftover in folder.glob(f"{_TMP_MARK}*"):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
        fingerprint = config_fingerprint(config)
        run_file = self.root / "run.json"
        if run_file.is_file():
            previous = json.loads(run_file.read_text())
            if previous.get("sha256") != fingerprint["sha256"] and any(self.stats.glob("*.stats.json")):
                raise ValueError(
                    f"{str(self.root)!r} already holds output curated with different settings (run.json); resume with "
                    "the same config, or choose a new output.path"
                )
        _write_atomic(run_file, json.dumps(fingerprint, indent=2, sort_keys=True).encode())

    def stats_path(self, shard: str) -> Path:
        return self.stats / f"{shard}.stats.json"

    def tar_path(self, shard: str) -> Path:
        return self.shards / f"{shard}.tar"

    def committed(self) -> set[str]:
        """Names of committed shards (those with a stats file)."""
        return {p.name[: -len(".stats.json")] for p in self.stats.glob("*.stats.json")}

    def load_stats(self, shard: str) -> dict[str, Any]:
        return json.loads(self.stats_path(shard).read_text())


def _histogram(values: list[float], low: float, high: float, bins: int) -> list[int]:
    if not values:
        return [0] * bins
    counts, _ = np.histogram(np.clip(values, low, high), bins=bins, range=(low, high))
    return [int(c) for c in counts]


def shard_stats(ref: ShardRef, rows: list[dict[str, Any]], config: CurateConfig) -> dict[str, Any]:
    """Per-shard report: in/kept/dropped per filter with reason codes, errors, templates, histograms, timings."""
    samples = [r for r in rows if r["read_error"] != "empty_shard"]
    errors = Counter(r["reason"].split(":", 1)[1] for r in samples if r["status"] == "error")
    dropped_by = Counter(r["reason"].split(":", 1)[0] for r in samples if r["status"] == "dropped")
    reasons = Counter(r["reason"] for r in samples if r["status"] == "dropped")
    kept = [r for r in samples if r["status"] == "ok"]
    filters: dict[str, Any] = {}
    reaching = len(samples) - sum(errors.values())
    for name in config.filters.ordered:
        dropped = {k.split(":", 1)[1]: v for k, v in sorted(reasons.items()) if k.split(":", 1)[0] == name}
        filters[name] = {"in": reaching, "kept": reaching - dropped_by[name], "dropped": dropped}
        reaching -= dropped_by[name]
    histograms = {}
    for name in config.filters.ordered:
        if name in SCORE_RANGES:
            column, low, high = SCORE_RANGES[name]
            values = [float(r[column]) for r in samples if not math.isnan(float(r[column]))]
            histograms[name] = {
                "column": column,
                "range": [low, high],
                "counts": _histogram(values, low, high, config.report.histogram_bins),
                "sum": float(sum(values)),
                "n": len(values),
            }
    return {
        "shard": ref.name,
        "index": ref.index,
        "source": ref.path,
        "range": [ref.start, ref.stop] if ref.kind != "webdataset" else None,
        "in": len(samples),
        "kept": len(kept),
        "dropped": sum(dropped_by.values()),
        "errors": dict(sorted(errors.items())),
        "filters": filters,
        "templates": dict(sorted(Counter(f"{r['template']:.3f}" for r in kept).items())),
        "reencoded": sum(1 for r in kept if r["reencoded"]),
        "histograms": histograms,
        "stage_seconds": {
            "metadata": float(sum(r["t_metadata"] for r in samples)),
            "ocr": float(sum(r["t_ocr"] for r in samples)),
            "models": float(sum(r["t_models"] for r in samples)),
        },
        "removed": {r["key"]: r["reason"] for r in samples if r["status"] != "ok"},
        "kept_hashes": [
            [r["sha256"], r["phash"], caption_digest(r["caption"]) if config.filters.dedup.caption else ""] for r in kept
        ],
    }


def _scores(row: dict[str, Any]) -> dict[str, float]:
    out = {}
    for column in ("ocr_text_area", "watermark_prob", "aesthetic_score"):
        value = float(row[column])
        if not math.isnan(value):
            out[column] = value
    return out


def _split_line(row: dict[str, Any], image_path: str) -> dict[str, Any]:
    source = json.loads(row["source_json"])
    line = {
        "image_path": image_path,
        "h_div_w": row["height"] / row["width"],
        "long_caption": row["caption"],
        "long_caption_type": source.get("long_caption_type", "original"),
    }
    if source.get("text"):
        line["text"] = source["text"]
        line["short_caption_type"] = source.get("short_caption_type", "original")
    return line


def commit_shard(
    ref: ShardRef, rows: list[dict[str, Any]], config: CurateConfig, layout: OutputLayout, dedup: DedupState | None
) -> dict[str, Any]:
    """Apply dedup (in sample order), write the shard's outputs atomically, then its stats marker. Returns the stats."""
    rows = sorted(rows, key=lambda r: r["order"])
    if dedup is not None:
        for row in rows:
            if row["status"] != "ok":
                continue
            code = dedup.check(row["sha256"], int(row["phash"], 16) if row["phash"] else None, row["caption"])
            if code:
                row.update(status="dropped", reason=f"dedup:{code}", image=b"")
    kept = [r for r in rows if r["status"] == "ok"]
    samples = [
        KeptSample(
            key=r["key"],
            image=r["image"],
            image_ext=r["image_ext"],
            caption=r["caption"],
            metadata=sample_metadata(
                key=r["key"], width=int(r["width"]), height=int(r["height"]), template=float(r["template"]),
                sha256=r["sha256"], phash=r["phash"], source_shard=ref.name, reencoded=bool(r["reencoded"]),
                scores=_scores(r), source=json.loads(r["source_json"]),
            ),
        )
        for r in kept
    ]
    tar_path = layout.tar_path(ref.name)
    tmp_tar = tar_path.with_name(f"{_TMP_MARK}{tar_path.name}.{os.getpid()}")
    write_tar(tmp_tar, samples)
    with open(tmp_tar, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp_tar, tar_path)
    if config.output.write_splits:
        final_dir = layout.images / ref.name
        tmp_dir = layout.images / f"{_TMP_MARK}{ref.name}.{os.getpid()}"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for sample, row in zip(samples, kept):
            (tmp_dir / f"{sample.key}.{sample.image_ext}").write_bytes(sample.image)
            target = final_dir / f"{sample.key}.{sample.image_ext}"
            image_path = str(target) if config.output.split_image_paths == "absolute" else str(target.relative_to(layout.root))
            line = _split_line(row, image_path)
            lines.append(json.dumps({"template": f"{row['template']:.3f}", "line": line}, ensure_ascii=False))
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(tmp_dir, final_dir)
        _write_atomic(layout.split_parts / f"{ref.name}.jsonl", ("\n".join(lines) + ("\n" if lines else "")).encode())
    stats = shard_stats(ref, rows, config)
    stats["output"] = {"tar": str(tar_path.relative_to(layout.root)), "bytes": tar_path.stat().st_size}
    _write_atomic(layout.stats_path(ref.name), json.dumps(stats, indent=1, sort_keys=True).encode())
    return stats
