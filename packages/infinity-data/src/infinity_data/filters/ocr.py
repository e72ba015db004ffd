"""OCR text-area filter: RapidOCR's text *detector* (PP-OCR, ONNX, bundled in the ``rapidocr`` wheel), no recognition.

Metric: the fraction of the image covered by the union of detected text polygons (rasterised on a mask), in [0, 1].
Measured on synthetic images (reference data_notes §2): no text 0.00, one caption line ~0.02, a centred watermark
word ~0.05, text-heavy posters 0.39-0.60. The Infinity paper publishes no threshold; ``max_text_area = 0.2`` is our
choice. Reason codes: ``ocr:text_area``, ``ocr:text_boxes``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["OcrConfig", "TextAreaScorer", "box_thickness", "text_area_ratio"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class OcrConfig:
    """Settings of the OCR text-area filter (units: fraction of image area)."""

    max_text_area: float = 0.2
    max_boxes: int = 0  # 0 = no limit on the number of text boxes
    limit_side_len: int = 640  # detector input: long side resized to this (RapidOCR Det.limit_type = "max")
    box_thresh: float = 0.5
    # The detector alone sometimes returns one huge box on smooth, text-free images (data_notes §2 pitfall c).
    # Boxes thicker than this fraction of the image's short side are confirmed by the bundled recogniser; 0 = never.
    verify_thick_boxes: float = 0.15
    rec_min_score: float = 0.5
    rec_min_chars: int = 2  # a blob read as one glyph ("O", "8") is not text
    num_threads: int = 1
    num_actors: int = 1  # Ray actor pool size for this filter

    def __post_init__(self) -> None:
        if not 0.0 < self.max_text_area <= 1.0:
            raise ValueError(f"filters.ocr.max_text_area must be in (0, 1], got {self.max_text_area}")
        if self.max_boxes < 0:
            raise ValueError(f"filters.ocr.max_boxes must be >= 0 (0 = no limit), got {self.max_boxes}")
        if self.limit_side_len < 32:
            raise ValueError(f"filters.ocr.limit_side_len must be >= 32, got {self.limit_side_len}")
        if not 0.0 <= self.verify_thick_boxes <= 1.0 or not 0.0 <= self.rec_min_score <= 1.0:
            raise ValueError("filters.ocr.verify_thick_boxes and filters.ocr.rec_min_score must be in [0, 1]")
        if self.num_threads < 1 or self.num_actors < 1:
            raise ValueError("filters.ocr.num_threads and filters.ocr.num_actors must be >= 1")

    def reason(self, area: float, boxes: int) -> str | None:
        """Drop reason for a scored image, or ``None`` to keep it."""
        if area > self.max_text_area:
            return "text_area"
        if self.max_boxes and boxes > self.max_boxes:
            return "text_boxes"
        return None


def text_area_ratio(boxes: np.ndarray | None, width: int, height: int) -> tuple[float, int]:
    """Union area of text quadrilaterals ``(N, 4, 2)`` (pixel xy) over the image area, and the box count."""
    if boxes is None or len(boxes) == 0:
        return 0.0, 0
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4, 2)
    # Rasterise at <= 512 px so the union (overlapping boxes count once) is cheap.
    scale = min(1.0, 512.0 / max(width, height))
    mask_w, mask_h = max(1, round(width * scale)), max(1, round(height * scale))
    mask = Image.new("L", (mask_w, mask_h), 0)
    draw = ImageDraw.Draw(mask)
    for quad in boxes:
        draw.polygon([(float(x) * scale, float(y) * scale) for x, y in quad], fill=255)
    return float(np.count_nonzero(np.asarray(mask))) / (mask_w * mask_h), len(boxes)


def box_thickness(quad: np.ndarray) -> float:
    """Short side (pixels) of a text quadrilateral given as 4 xy corners in order."""
    quad = np.asarray(quad, dtype=np.float64).reshape(4, 2)
    return float(min(np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[3] - quad[0])))


class TextAreaScorer:
    """Loads the RapidOCR detector once; ``score(image)`` returns ``(text_area_ratio, num_boxes)``."""

    def __init__(self, config: OcrConfig) -> None:
        try:
            from rapidocr import RapidOCR
        except ImportError as exc:
            raise ImportError(
                "the OCR filter needs RapidOCR and onnxruntime: pip install 'infinity-data[ocr]'"
            ) from exc
        self.config = config
        params: dict[str, Any] = {
            "Global.use_det": True,
            "Global.use_cls": False,
            "Global.use_rec": False,
            "Global.log_level": "error",
            "Det.limit_type": "max",
            "Det.limit_side_len": config.limit_side_len,
            "Det.box_thresh": config.box_thresh,
            "EngineConfig.onnxruntime.intra_op_num_threads": config.num_threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        self._engine = RapidOCR(params=params)
        self._recogniser = None
        if config.verify_thick_boxes > 0:
            rec_params = dict(params, **{"Global.use_det": False, "Global.use_rec": True})
            self._recogniser = RapidOCR(params=rec_params)

    def _confirmed(self, array: np.ndarray, quad: np.ndarray) -> bool:
        # Recognise the box's bounding rectangle; real text yields characters with a confident score.
        xs, ys = quad[:, 0], quad[:, 1]
        x0, x1 = int(max(0, xs.min())), int(min(array.shape[1], xs.max() + 1))
        y0, y1 = int(max(0, ys.min())), int(min(array.shape[0], ys.max() + 1))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return False
        result = self._recogniser(np.ascontiguousarray(array[y0:y1, x0:x1]), use_det=False, use_cls=False, use_rec=True)
        texts = getattr(result, "txts", None) or ()
        scores = getattr(result, "scores", None) or ()
        return any(
            len("".join(t.split())) >= self.config.rec_min_chars and s >= self.config.rec_min_score
            for t, s in zip(texts, scores)
        )

    def score(self, image: Image.Image) -> tuple[float, int]:
        """Text-area ratio and number of text boxes of an RGB image."""
        array = np.asarray(image.convert("RGB"))[:, :, ::-1]  # RapidOCR expects OpenCV's BGR order for arrays
        # Pass all three switches on every call: RapidOCR persists per-call overrides (data_notes §2 pitfall a).
        result = self._engine(np.ascontiguousarray(array), use_det=True, use_cls=False, use_rec=False)
        boxes = getattr(result, "boxes", None)
        if boxes is not None and len(boxes) and self._recogniser is not None:
            limit = self.config.verify_thick_boxes * min(image.width, image.height)
            boxes = [q for q in np.asarray(boxes).reshape(-1, 4, 2) if box_thickness(q) <= limit or self._confirmed(array, q)]
            boxes = np.asarray(boxes).reshape(-1, 4, 2)
        return text_area_ratio(boxes, image.width, image.height)
