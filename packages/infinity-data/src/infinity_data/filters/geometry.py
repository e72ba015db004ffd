"""Resolution and aspect-ratio filters, computed from the image header alone.

Both use the official bucketing: an image of size (h, w) trains at the template ``nearest_template(h / w)`` and the
loader resizes it (LANCZOS) so that it *covers* the template's pixel size for the chosen ``pn``, then center-crops.
Small images are therefore upscaled by the loader and extreme aspect ratios lose much of their area to the crop;
these filters reject such samples before they reach training.
"""

from __future__ import annotations

from dataclasses import dataclass

from infinity_scales import RESOLUTIONS, get_image_size, nearest_template

__all__ = ["AspectRatioConfig", "ResolutionConfig", "cover_scale", "crop_loss", "template_of"]


def template_of(height: int, width: int) -> float:
    """The official aspect-ratio template of an image (argmin over templates, ties to the earlier key)."""
    return nearest_template(height / width)


def cover_scale(height: int, width: int, pn: str) -> float:
    """Scale factor the official loader applies so the image covers its template size at ``pn`` (> 1 = upscaling)."""
    target_h, target_w = get_image_size(template_of(height, width), pn)
    return max(target_h / height, target_w / width)


def crop_loss(height: int, width: int) -> float:
    """Fraction of the (resized) image area the center crop to the template's aspect ratio throws away, in [0, 1)."""
    ratio = height / width
    template = template_of(height, width)
    return 1.0 - min(ratio, template) / max(ratio, template)


@dataclass(frozen=True, kw_only=True)
class ResolutionConfig:
    """Minimum resolution: drop images the loader would upscale by more than ``max_upscale`` at preset ``pn``.

    ``max_upscale = 1.0`` (default) keeps only images at least as large as their template's target size
    (e.g. 512 x 512 for a square image at ``pn = "0.25M"``). Reason code: ``resolution:too_small``.
    """

    pn: str = "0.25M"
    max_upscale: float = 1.0

    def __post_init__(self) -> None:
        if self.pn not in RESOLUTIONS:
            raise ValueError(f"filters.resolution.pn={self.pn!r} is not a resolution preset; choose one of {RESOLUTIONS}")
        if not self.max_upscale >= 1.0:
            raise ValueError(f"filters.resolution.max_upscale must be >= 1.0 (1.0 = no upscaling), got {self.max_upscale}")

    def reason(self, height: int, width: int) -> str | None:
        """The drop reason code for an image of this size, or ``None`` to keep it."""
        return "too_small" if cover_scale(height, width, self.pn) > self.max_upscale * (1 + 1e-9) else None


@dataclass(frozen=True, kw_only=True)
class AspectRatioConfig:
    """Aspect-ratio limits: drop images whose center crop to the nearest template loses more than ``max_crop_loss``.

    Every h/w between the extreme templates (1/3 and 3) loses at most ~11% of its area, so the default 0.15 only drops
    images beyond roughly 1:3.5 / 3.5:1; ``min_h_div_w`` / ``max_h_div_w`` add hard bounds. Reason codes:
    ``aspect_ratio:crop_loss``, ``aspect_ratio:out_of_range``.
    """

    max_crop_loss: float = 0.15
    min_h_div_w: float = 0.0
    max_h_div_w: float = float("inf")

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_crop_loss < 1.0:
            raise ValueError(f"filters.aspect_ratio.max_crop_loss must be in [0, 1), got {self.max_crop_loss}")
        if not 0.0 <= self.min_h_div_w < self.max_h_div_w:
            raise ValueError(
                f"filters.aspect_ratio needs 0 <= min_h_div_w < max_h_div_w, got {self.min_h_div_w}, {self.max_h_div_w}"
            )

    def reason(self, height: int, width: int) -> str | None:
        """The drop reason code for an image of this size, or ``None`` to keep it."""
        ratio = height / width
        if ratio < self.min_h_div_w or ratio > self.max_h_div_w:
            return "out_of_range"
        if crop_loss(height, width) > self.max_crop_loss:
            return "crop_loss"
        return None
