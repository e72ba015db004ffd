"""infinity_scales: Infinity's scale schedules, the official aspect-ratio tables and a generator for any latent size.

Standard library only, so that torch-free installs (the data curation workers of ``infinity-data``) share the one
implementation with the tokenizer (``bsq_tokenizer.schedules`` re-exports this module) and the transformer.

A *scale schedule* is the list ``[(h_1, w_1), ..., (h_K, w_K)]`` of token grids of the K scales, coarsest first; the
last entry is the full latent size. The official Infinity code (paper Table 10) defines 13-scale lists for 15
aspect-ratio templates ``h/w``; a resolution name selects a prefix of that list:

=========  ======  =====================================
name       scales  pixels (1:1)
=========  ======  =====================================
``0.06M``  7       256 x 256
``0.25M``  10      512 x 512
``0.60M``  12      768 x 768
``1M``     13      1024 x 1024
=========  ======  =====================================

Image size = 16 x last scale (the transformer's token stride is 16 pixels for every released tokenizer).
"""

from __future__ import annotations

import math
import re

__all__ = [
    "RESOLUTIONS",
    "TEMPLATES",
    "get_image_size",
    "get_scale_schedule",
    "nearest_template",
    "parse_aspect_ratio",
    "schedule_for_latent",
    "sequence_length",
]

__version__ = "0.1.0"

# The 13 scales of each template with h/w >= 1 (official 1M lists). Templates with h/w < 1 are the transposes.
# fmt: off
_BASE_TABLES: dict[float, tuple[tuple[int, int], ...]] = {
    1.0: ((1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16), (20, 20), (24, 24), (32, 32), (40, 40), (48, 48), (64, 64)),
    1.25: ((1, 1), (2, 2), (3, 3), (5, 4), (10, 8), (15, 12), (20, 16), (25, 20), (30, 24), (35, 28), (45, 36), (55, 44), (70, 56)),
    1.333: ((1, 1), (2, 2), (4, 3), (8, 6), (12, 9), (16, 12), (20, 15), (24, 18), (28, 21), (36, 27), (48, 36), (60, 45), (72, 54)),
    1.5: ((1, 1), (2, 2), (3, 2), (6, 4), (9, 6), (15, 10), (21, 14), (27, 18), (33, 22), (39, 26), (48, 32), (63, 42), (78, 52)),
    1.75: ((1, 1), (2, 2), (3, 3), (7, 4), (11, 6), (14, 8), (21, 12), (28, 16), (35, 20), (42, 24), (56, 32), (70, 40), (84, 48)),
    2.0: ((1, 1), (2, 2), (4, 2), (6, 3), (10, 5), (16, 8), (22, 11), (30, 15), (38, 19), (46, 23), (60, 30), (74, 37), (90, 45)),
    2.5: ((1, 1), (2, 2), (5, 2), (10, 4), (15, 6), (20, 8), (25, 10), (30, 12), (40, 16), (50, 20), (65, 26), (80, 32), (100, 40)),
    3.0: ((1, 1), (2, 2), (6, 2), (9, 3), (15, 5), (21, 7), (27, 9), (36, 12), (45, 15), (54, 18), (72, 24), (90, 30), (111, 37)),
}

# Official key order: each ratio r > 1 is followed by its inverse, keyed int(1000 / r) / 1000.
TEMPLATES: tuple[float, ...] = (
    1.0, 1.25, 0.8, 1.333, 0.75, 1.5, 0.666, 1.75, 0.571, 2.0, 0.5, 2.5, 0.4, 3.0, 0.333,
)
# fmt: on
RESOLUTIONS: tuple[str, ...] = ("0.06M", "0.25M", "0.60M", "1M")
_NUM_SCALES: dict[str, int] = {"0.06M": 7, "0.25M": 10, "0.60M": 12, "1M": 13}
TOKEN_STRIDE = 16  # pixels per token of the transformer grid


def _full_table(template: float) -> tuple[tuple[int, int], ...]:
    if template in _BASE_TABLES:
        return _BASE_TABLES[template]
    for ratio, table in _BASE_TABLES.items():
        if ratio != 1.0 and int(1000 / ratio) / 1000 == template:
            return tuple((w, h) for h, w in table)
    raise AssertionError(f"unknown template {template}")  # unreachable for members of TEMPLATES


def _canonical_template(h_div_w_template: float) -> float:
    try:
        value = float(h_div_w_template)
    except (TypeError, ValueError):
        raise ValueError(f"h_div_w_template must be a number, got {h_div_w_template!r}") from None
    best = min(TEMPLATES, key=lambda t: abs(t - value))
    if abs(best - value) > 1e-3:
        raise ValueError(
            f"{value} is not one of the aspect-ratio templates {TEMPLATES}; "
            f"use nearest_template({value}) = {nearest_template(value)} to pick one"
        )
    return best


def nearest_template(h_div_w: float) -> float:
    """The template ``t`` in :data:`TEMPLATES` minimising ``|h_div_w - t|``; ties go to the earlier template.

    This is the official rule used to bucket training images and to pick the generation size.
    """
    value = float(h_div_w)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"aspect ratio h/w must be a positive finite number, got {h_div_w!r}")
    best, best_err = TEMPLATES[0], abs(value - TEMPLATES[0])
    for template in TEMPLATES[1:]:
        err = abs(value - template)
        if err < best_err:
            best, best_err = template, err
    return best


def get_scale_schedule(h_div_w_template: float, pn: str) -> list[tuple[int, int]]:
    """The official token grids ``[(h_k, w_k), ...]`` of a template (h/w) at resolution ``pn`` (e.g. ``"0.06M"``)."""
    if pn not in _NUM_SCALES:
        raise ValueError(f"unknown resolution {pn!r}; choose one of {RESOLUTIONS}")
    template = _canonical_template(h_div_w_template)
    return list(_full_table(template)[: _NUM_SCALES[pn]])


def get_image_size(h_div_w_template: float, pn: str) -> tuple[int, int]:
    """Pixel size ``(H, W)`` of a template at resolution ``pn``: 16 times the last scale of the schedule."""
    h, w = get_scale_schedule(h_div_w_template, pn)[-1]
    return h * TOKEN_STRIDE, w * TOKEN_STRIDE


def sequence_length(schedule: list[tuple[int, int]] | tuple[tuple[int, int], ...]) -> int:
    """Number of tokens ``L = sum_k h_k * w_k`` of a schedule (the start token of scale 1 included)."""
    return sum(h * w for h, w in schedule)


_RATIO_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:x/]\s*(\d+(?:\.\d+)?)\s*$")


def parse_aspect_ratio(text: str) -> float:
    """Parse an aspect ratio and return it as ``h / w``.

    ``"16:9"`` (also ``"16x9"`` / ``"16/9"``) means width:height, the way people name screens, so it returns
    ``9 / 16 = 0.5625``. A bare number such as ``"1.5"`` is taken as ``h / w`` directly.
    """
    if not isinstance(text, str):
        raise ValueError(f"aspect ratio must be a string like '16:9' or '1.5', got {text!r}")
    match = _RATIO_RE.match(text)
    if match:
        width, height = float(match.group(1)), float(match.group(2))
        if width <= 0 or height <= 0:
            raise ValueError(f"aspect ratio {text!r} must have positive width and height")
        return height / width
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"cannot parse aspect ratio {text!r}: use 'W:H' (e.g. '16:9', width first) or a number meaning h/w (e.g. '1.5')"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"aspect ratio {text!r} must be a positive number (h/w)")
    return value


# Side lengths of the official 1:1 schedule, extended geometrically (x1.25, multiples of 8) for latents beyond 64.
_SIDES: tuple[int, ...] = (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64)


def _side_ladder(limit: float) -> list[int]:
    sides = list(_SIDES)
    while sides[-1] < limit:
        sides.append(max(sides[-1] + 8, round(sides[-1] * 1.25 / 8) * 8))
    return sides


def _official_match(h: int, w: int, num_scales: int | None) -> list[tuple[int, int]] | None:
    for template in TEMPLATES:
        table = _full_table(template)
        for pn, n in _NUM_SCALES.items():
            if table[n - 1] == (h, w) and (num_scales is None or num_scales == n):
                return get_scale_schedule(template, pn)
    return None


def _grid_for_side(side: float, h: int, w: int) -> tuple[int, int]:
    # A grid with about side^2 tokens and the latent's aspect ratio, clamped to [1, h] x [1, w].
    ratio = h / w
    gh = min(h, max(1, round(side * math.sqrt(ratio))))
    gw = min(w, max(1, round(side / math.sqrt(ratio))))
    return gh, gw


def schedule_for_latent(h: int, w: int, num_scales: int | None = None) -> list[tuple[int, int]]:
    """A scale schedule ending at the latent size ``(h, w)``, for any size.

    When ``(h, w)`` is the last scale of an official table (any template and resolution) and ``num_scales`` is
    ``None`` or that table's length, the official schedule is returned unchanged. Otherwise the scales follow the
    official 1:1 side ladder 1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64 (extended by ~1.25x beyond 64) with the
    latent's aspect ratio; ``num_scales`` (if given) picks that many scales spread evenly (geometrically) instead.
    Every schedule starts at (1, 1), ends at (h, w), and grows monotonically in both dimensions.
    """
    if not (isinstance(h, int) and isinstance(w, int)) or h < 1 or w < 1:
        raise ValueError(f"latent size must be two positive ints, got ({h!r}, {w!r})")
    if num_scales is not None and (not isinstance(num_scales, int) or num_scales < 1):
        raise ValueError(f"num_scales must be a positive int or None, got {num_scales!r}")
    official = _official_match(h, w, num_scales)
    if official is not None:
        return official
    if num_scales == 1:
        return [(h, w)]
    area_side = math.sqrt(h * w)
    if num_scales is None:
        sides: list[float] = [s for s in _side_ladder(area_side) if s < area_side]
    else:
        # geometric spacing from 1 to the full size, K - 1 intermediate sides (the full size is appended below)
        sides = [area_side ** (k / (num_scales - 1)) for k in range(num_scales - 1)]
    schedule: list[tuple[int, int]] = []
    for side in sides:
        gh, gw = _grid_for_side(side, h, w)
        if schedule:
            gh, gw = max(gh, schedule[-1][0]), max(gw, schedule[-1][1])
        if (gh, gw) == (h, w):
            break
        if not schedule or (gh, gw) != schedule[-1]:
            schedule.append((gh, gw))
    if (h, w) != (1, 1) and (not schedule or schedule[0] != (1, 1)):
        schedule.insert(0, (1, 1))
    schedule.append((h, w))
    if num_scales is not None and len(schedule) != num_scales:
        schedule = _force_length(schedule, num_scales, h, w)
    return schedule


def _force_length(schedule: list[tuple[int, int]], num_scales: int, h: int, w: int) -> list[tuple[int, int]]:
    """Insert intermediate grids (or fail) so the schedule has exactly ``num_scales`` distinct scales."""
    if num_scales > h + w - 1:
        raise ValueError(
            f"cannot build {num_scales} distinct monotone scales for a {h}x{w} latent (at most h + w - 1 = {h + w - 1})"
        )
    if len(schedule) > num_scales:
        keep = [round(i * (len(schedule) - 1) / (num_scales - 1)) for i in range(num_scales)]
        return [schedule[i] for i in keep]
    # too few because small grids collided: walk the dense ladder of all monotone grids and fill the gaps
    out = list(schedule)
    while len(out) < num_scales:
        # split the largest gap (in token count) by inserting a grid between its two ends
        best_i, best_gap = None, 0
        for i in range(len(out) - 1):
            (h0, w0), (h1, w1) = out[i], out[i + 1]
            if (h1 - h0) + (w1 - w0) > 1 and h1 * w1 - h0 * w0 > best_gap:
                best_i, best_gap = i, h1 * w1 - h0 * w0
        if best_i is None:
            raise ValueError(f"cannot build {num_scales} distinct scales for a {h}x{w} latent")
        (h0, w0), (h1, w1) = out[best_i], out[best_i + 1]
        mid = ((h0 + h1) // 2, (w0 + w1) // 2)
        if mid in ((h0, w0), (h1, w1)):
            mid = (h0 + 1, w0) if h1 > h0 else (h0, w0 + 1)
        out.insert(best_i + 1, mid)
    return out
