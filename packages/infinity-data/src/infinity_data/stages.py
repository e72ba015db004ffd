"""Batch stages of the pipeline: metadata + cheap filters, OCR, torch models (watermark + aesthetic).

A batch is a dict of equal-length columns (numpy arrays, as Ray Data's ``batch_format="numpy"`` delivers them).
Stages never remove rows: a filtered sample gets ``status = "dropped"`` and ``reason = "<filter>:<code>"`` (errors:
``status = "error"``, ``reason = "error:<kind>"``), its image bytes are released, and later stages skip it. The driver
therefore sees every input sample and the report balances (in = kept + dropped + errors).

Stage classes load their models in ``__init__`` -- once per Ray actor -- and are plain callables on batches.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from .config import CurateConfig
from .decode import DecodeError, decode_rgb, normalized_bytes, probe
from .filters.aesthetic import AestheticScorer
from .filters.geometry import template_of
from .filters.ocr import TextAreaScorer
from .filters.watermark import WatermarkScorer
from .hashing import phash, sha256_hex

__all__ = ["MetadataStage", "ModelStage", "OcrStage", "from_rows", "metadata_stage", "to_rows"]

logger = logging.getLogger(__name__)

SCORE_COLUMNS = ("ocr_text_area", "ocr_boxes", "watermark_prob", "aesthetic_score")
TIME_COLUMNS = ("t_metadata", "t_ocr", "t_models")
_STRING_COLUMNS = {"shard_name", "key", "caption", "source_json", "read_error", "status", "reason", "sha256", "phash",
                   "image_ext"}


def to_rows(batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Columns -> list of row dicts (numpy scalars turned into Python values)."""
    columns = {k: list(v) for k, v in batch.items()}
    n = len(next(iter(columns.values()))) if columns else 0
    rows = []
    for i in range(n):
        row = {}
        for name, values in columns.items():
            value = values[i]
            row[name] = value.item() if isinstance(value, np.generic) else value
        rows.append(row)
    return rows


def from_rows(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """List of row dicts -> columns; text and bytes become object arrays (Arrow-friendly, no fixed-width strings)."""
    if not rows:
        return {}
    out: dict[str, np.ndarray] = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        if name == "image" or name in _STRING_COLUMNS:
            out[name] = np.array(values, dtype=object)
        else:
            out[name] = np.asarray(values)
    return out


def _drop(row: dict[str, Any], reason: str, status: str = "dropped") -> None:
    row["status"] = status
    row["reason"] = reason
    row["image"] = b""


def _metadata_row(row: dict[str, Any], config: CurateConfig) -> None:
    row.update(
        status="ok", reason="", width=-1, height=-1, h_div_w=math.nan, template=math.nan, sha256="", phash="",
        image_ext="", reencoded=False,
    )
    for name in SCORE_COLUMNS:
        row[name] = math.nan
    for name in TIME_COLUMNS:
        row[name] = 0.0
    if row["read_error"]:
        _drop(row, f"error:{row['read_error']}", "error")
        return
    data: bytes = row["image"]
    try:
        info = probe(data, config.decode)
    except DecodeError as exc:
        _drop(row, f"error:{exc.kind}", "error")
        return
    row.update(width=info.width, height=info.height, h_div_w=info.h_div_w, sha256=sha256_hex(data))
    row["template"] = template_of(info.height, info.width)
    filters = config.filters
    if filters.is_on("caption"):
        code = filters.caption.reason(row["caption"])
        if code:
            _drop(row, f"caption:{code}")
            return
    if filters.is_on("resolution"):
        code = filters.resolution.reason(info.height, info.width)
        if code:
            _drop(row, f"resolution:{code}")
            return
    if filters.is_on("aspect_ratio"):
        code = filters.aspect_ratio.reason(info.height, info.width)
        if code:
            _drop(row, f"aspect_ratio:{code}")
            return
    try:
        if filters.needs_phash:
            # Reduced-scale (DCT draft) decode: a 32 x 32 thumbnail does not need full resolution.
            row["phash"] = f"{phash(decode_rgb(data, config.decode, max_side=128)):016x}"
        stored, ext, reencoded = normalized_bytes(data, info, config.decode)
    except DecodeError as exc:
        _drop(row, f"error:{exc.kind}", "error")
        return
    row.update(image=stored, image_ext=ext, reencoded=reencoded)


def metadata_stage(batch: Mapping[str, Any], config: CurateConfig) -> dict[str, np.ndarray]:
    """Header probe, guards, sha256, pHash, template, resolution and aspect-ratio filters, byte normalisation."""
    start = time.perf_counter()
    rows = to_rows(batch)
    for row in rows:
        _metadata_row(row, config)
    per_row = (time.perf_counter() - start) / max(1, len(rows))
    for row in rows:
        row["t_metadata"] = per_row
    return from_rows(rows)


class MetadataStage:
    """Callable-class form of :func:`metadata_stage` (for actor pools)."""

    def __init__(self, config: CurateConfig) -> None:
        self.config = config

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return metadata_stage(batch, self.config)


def _open_rgb(row: dict[str, Any], config: CurateConfig, max_side: int | None) -> Image.Image | None:
    try:
        return decode_rgb(row["image"], config.decode, max_side=max_side)
    except DecodeError as exc:
        _drop(row, f"error:{exc.kind}", "error")
        return None


class OcrStage:
    """RapidOCR text-area filter; the detector is loaded once per instance (per Ray actor)."""

    def __init__(self, config: CurateConfig) -> None:
        self.config = config
        self.scorer = TextAreaScorer(config.filters.ocr)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        rows = to_rows(batch)
        ocr = self.config.filters.ocr
        for row in rows:
            if row["status"] != "ok":
                continue
            image = _open_rgb(row, self.config, ocr.limit_side_len)
            if image is None:
                continue
            area, boxes = self.scorer.score(image)
            row["ocr_text_area"], row["ocr_boxes"] = area, float(boxes)
            code = ocr.reason(area, boxes)
            if code:
                _drop(row, f"ocr:{code}")
        per_row = (time.perf_counter() - start) / max(1, len(rows))
        for row in rows:
            row["t_ocr"] = per_row
        return from_rows(rows)


class ModelStage:
    """Watermark and/or aesthetic scoring with torch models, fused in one actor so images decode once per stage
    and a GPU holds both models (``ray.model_num_gpus``)."""

    def __init__(self, config: CurateConfig) -> None:
        self.config = config
        filters = config.filters
        self.watermark = None
        self.aesthetic = None
        if filters.is_on("watermark"):
            self.watermark = WatermarkScorer(filters.watermark)
        if filters.is_on("aesthetic"):
            self.aesthetic = AestheticScorer(filters.aesthetic)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        rows = to_rows(batch)
        live, images = [], []
        for row in rows:
            if row["status"] == "ok":
                image = _open_rgb(row, self.config, 512)
                if image is not None:
                    live.append(row)
                    images.append(image)
        filters = self.config.filters
        if self.watermark is not None and live:
            probs = self.watermark.score(images)
            keep_rows, keep_images = [], []
            for row, image, prob in zip(live, images, probs):
                row["watermark_prob"] = float(prob)
                code = filters.watermark.reason(float(prob))
                if code:
                    _drop(row, f"watermark:{code}")
                else:
                    keep_rows.append(row)
                    keep_images.append(image)
            live, images = keep_rows, keep_images
        if self.aesthetic is not None and live:
            scores = self.aesthetic.score(images)
            for row, score in zip(live, scores):
                row["aesthetic_score"] = float(score)
                code = filters.aesthetic.reason(float(score))
                if code:
                    _drop(row, f"aesthetic:{code}")
        per_row = (time.perf_counter() - start) / max(1, len(rows))
        for row in rows:
            row["t_models"] = per_row
        return from_rows(rows)


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of an image (test and benchmark helper)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
