"""Filters, their settings and reason codes.

Filters always run in this canonical order, cheapest first; ``filters.enabled`` picks which ones run:

==============  ======================  =========================================  ==========================
name            runs in                 metric (units)                             reason codes
==============  ======================  =========================================  ==========================
caption         metadata stage          caption length (characters)                ``too_short``
resolution      metadata stage (header) loader upscale factor at ``pn``            ``too_small``
aspect_ratio    metadata stage (header) crop loss to the nearest template (0-1)    ``crop_loss``, ``out_of_range``
ocr             OCR actor pool          text-area ratio (0-1)                      ``text_area``, ``text_boxes``
watermark       model actor pool        P(watermark) (0-1)                         ``probability``
aesthetic       model actor pool        LAION aesthetic V2 (raw, ~1-10)            ``low_score``
dedup           driver, in input order  sha256 / pHash Hamming / caption           ``exact``, ``near``, ``caption``
==============  ======================  =========================================  ==========================
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .aesthetic import AestheticConfig
from .caption import CaptionConfig
from .dedup import DedupConfig
from .geometry import AspectRatioConfig, ResolutionConfig
from .ocr import OcrConfig
from .watermark import WatermarkConfig

__all__ = [
    "FILTER_NAMES",
    "MODEL_FILTERS",
    "SCORE_RANGES",
    "AestheticConfig",
    "AspectRatioConfig",
    "CaptionConfig",
    "DedupConfig",
    "FiltersConfig",
    "OcrConfig",
    "ResolutionConfig",
    "WatermarkConfig",
]

FILTER_NAMES: tuple[str, ...] = ("caption", "resolution", "aspect_ratio", "ocr", "watermark", "aesthetic", "dedup")
MODEL_FILTERS: tuple[str, ...] = ("watermark", "aesthetic")  # torch models, fused into one actor
# Score column per filter and the fixed histogram range of its metric.
SCORE_RANGES: dict[str, tuple[str, float, float]] = {
    "ocr": ("ocr_text_area", 0.0, 1.0),
    "watermark": ("watermark_prob", 0.0, 1.0),
    "aesthetic": ("aesthetic_score", 0.0, 10.0),
}


@dataclass(frozen=True, kw_only=True)
class FiltersConfig:
    """Which filters run (``enabled``, any order; execution order is canonical) and each filter's settings."""

    enabled: tuple[str, ...] = ("caption", "resolution", "aspect_ratio", "dedup")
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    aspect_ratio: AspectRatioConfig = field(default_factory=AspectRatioConfig)
    ocr: OcrConfig = field(default_factory=OcrConfig)
    watermark: WatermarkConfig = field(default_factory=WatermarkConfig)
    aesthetic: AestheticConfig = field(default_factory=AestheticConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)

    def __post_init__(self) -> None:
        unknown = [name for name in self.enabled if name not in FILTER_NAMES]
        if unknown:
            raise ValueError(
                f"unknown filter name(s) {unknown} in filters.enabled; known filters: {', '.join(FILTER_NAMES)}"
            )
        if len(set(self.enabled)) != len(self.enabled):
            raise ValueError(f"filters.enabled lists a filter twice: {list(self.enabled)}")

    @property
    def ordered(self) -> tuple[str, ...]:
        """Enabled filters in execution order."""
        return tuple(name for name in FILTER_NAMES if name in self.enabled)

    def is_on(self, name: str) -> bool:
        return name in self.enabled

    @property
    def needs_phash(self) -> bool:
        return self.is_on("dedup") and self.dedup.near

    def check_files(self) -> None:
        """Fail early (before any work starts) if an enabled model filter's weights are missing."""
        if self.is_on("watermark"):
            self.watermark.check_files()
        if self.is_on("aesthetic"):
            self.aesthetic.check_files()
