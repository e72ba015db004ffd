"""Scale schedules, re-exported from :mod:`infinity_scales` (standard library only, shared with torch-free installs).

``bsq_tokenizer.schedules`` and ``infinity_scales`` are the same functions; the tokenizer, the transformer and the
service import them from here, the data curation package (which has no torch) from ``infinity_scales``.
"""

from __future__ import annotations

from infinity_scales import (
    RESOLUTIONS,
    TEMPLATES,
    TOKEN_STRIDE,
    get_image_size,
    get_scale_schedule,
    nearest_template,
    parse_aspect_ratio,
    schedule_for_latent,
    sequence_length,
)

__all__ = [
    "RESOLUTIONS",
    "TEMPLATES",
    "TOKEN_STRIDE",
    "get_image_size",
    "get_scale_schedule",
    "nearest_template",
    "parse_aspect_ratio",
    "schedule_for_latent",
    "sequence_length",
]
