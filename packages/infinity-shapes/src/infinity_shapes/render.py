"""Render a :class:`PromptSpec` into an image: solid background, large flat-coloured shapes, no overlap."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from infinity_shapes.spec import COLORS, SHAPES, PromptSpec

BACKGROUND: tuple[int, int, int] = (245, 245, 245)
_SUPERSAMPLE = 4


@dataclass(frozen=True, kw_only=True)
class RenderConfig:
    """How scenes are drawn. Sizes are fractions of the image side."""

    image_size: int = 64
    min_object: float = 0.24
    max_object: float = 0.32
    gap: float = 0.04
    #: > 0: snap every object's bounding box to a lattice of this many pixels (sides and corners on multiples of
    #: ``grid``, at least one cell from the border), e.g. half the tokenizer stride. Scenes keep random layouts but
    #: lose sub-lattice jitter: a knob for studying how layout entropy affects AR training (at the demo budget it did
    #: not help; see docs/training.md).
    grid: int = 0
    #: True: when a prompt names two groups without a relation ("a red circle and a blue square"), the first group
    #: is drawn in the left half and the second in the right half, as for "to the left of". A data convention that
    #: tells the model which object goes where; without it each region of an open layout decides alone which shape
    #: it holds, and two same-coloured objects often come out as the same shape (docs/training.md). The scorer does
    #: not check positions for these prompts, so ordered and unordered scenes grade alike.
    ordered: bool = False
    #: True: the objects of one group are drawn in a line along the long side of their region (left to right in
    #: the whole image or a top / bottom half, top to bottom in a left / right half), one per equal slot, each
    #: centred in its slot up to ``row_jitter`` (fraction of the side) on either axis, with a random size. A data
    #: convention like ``ordered``: the caption then fixes how many objects go where, so "three red circles" does
    #: not leave each region to decide alone whether it holds one. Not combinable with ``grid``.
    rows: bool = False
    row_jitter: float = 0.08

    def __post_init__(self) -> None:
        if not 32 <= self.image_size <= 512:
            raise ValueError(f"image_size must be in [32, 512] pixels, got {self.image_size}")
        if not 0.05 <= self.min_object <= self.max_object <= 0.45:
            raise ValueError(
                f"need 0.05 <= min_object <= max_object <= 0.45 (fractions of the side), got "
                f"{self.min_object}, {self.max_object}"
            )
        if not 0.0 <= self.gap < 0.2:
            raise ValueError(f"gap must be in [0, 0.2), got {self.gap}")
        if not 0 <= self.grid <= self.image_size // 16:
            raise ValueError(f"grid must be in [0, image_size / 16] pixels, got {self.grid} at {self.image_size}px")
        if self.rows and self.grid:
            raise ValueError("rows and grid cannot be combined")
        if not 0.0 <= self.row_jitter <= 0.5:
            raise ValueError(f"row_jitter must be in [0, 0.5] (fraction of the side), got {self.row_jitter}")


@dataclass(frozen=True, kw_only=True)
class Placement:
    """One drawn object: centre (x right, y down) and side, in pixels."""

    color: str
    shape: str
    cx: float
    cy: float
    size: float


def _regions(spec: PromptSpec, ordered: bool = False) -> list[tuple[float, float, float, float]]:
    """Allowed (x0, y0, x1, y1) box per group, in unit coordinates, that makes the relation true (``ordered``: two
    groups without a relation are placed as for "left of")."""
    full = (0.0, 0.0, 1.0, 1.0)
    left, right, top, bottom = (0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0)
    return {
        None: [full, full],
        "left of": [left, right],
        "right of": [right, left],
        "above": [top, bottom],
        "below": [bottom, top],
    }[spec.relation or ("left of" if ordered and len(spec.groups) == 2 else None)][: len(spec.groups)]


def _slot(x0: float, y0: float, x1: float, y1: float, *, index: int, count: int) -> tuple[float, float, float, float]:
    """The ``index``-th of ``count`` equal slots of a region, cut along its long side."""
    if x1 - x0 >= y1 - y0:
        step = (x1 - x0) / count
        return x0 + index * step, y0, x0 + (index + 1) * step, y1
    step = (y1 - y0) / count
    return x0, y0 + index * step, x1, y0 + (index + 1) * step


def _row_place(
    region: tuple[float, float, float, float], *, index: int, count: int, size: float, config: RenderConfig
) -> tuple[float, tuple[float, float], tuple[float, float]]:
    """Row layouts: the object's size capped to its slot, and the ranges of its centre's x and y (pixels), each
    within ``row_jitter`` of the image side around the slot's centre."""
    side = config.image_size
    x0, y0, x1, y1 = _slot(*region, index=index, count=count)
    size = min(size, (x1 - x0 - config.gap) * side, (y1 - y0 - config.gap) * side)
    half, jitter = size / 2 + 1, config.row_jitter * side
    ranges = []
    for lo, hi in ((x0 * side + half, x1 * side - half), (y0 * side + half, y1 * side - half)):
        middle = (lo + hi) / 2
        ranges.append((max(lo, middle - jitter), min(hi, middle + jitter)))
    return size, ranges[0], ranges[1]


def layout(spec: PromptSpec, config: RenderConfig, rng: np.random.Generator) -> list[Placement]:
    """Choose sizes and non-overlapping positions for every object of ``spec`` (rejection sampling)."""
    side = config.image_size
    for attempt in range(100):
        shrink = 1.0 - 0.3 * attempt / 100  # give crowded scenes smaller objects after failures
        placed: list[Placement] = []
        ok = True
        for group, region in zip(spec.groups, _regions(spec, config.ordered), strict=True):
            start = len(placed)
            for _ in range(group.count):
                x0, y0, x1, y1 = region
                size = side * shrink * rng.uniform(config.min_object, config.max_object)
                half = size / 2 + 1
                grid = config.grid
                if grid:  # corners on the lattice, >= one cell from the image border, inside the region
                    size = grid * max(1, round(size / grid))
                    lo_x, hi_x = max(grid, math.ceil(x0 * side / grid) * grid), min(side - grid, x1 * side) - size
                    lo_y, hi_y = max(grid, math.ceil(y0 * side / grid) * grid), min(side - grid, y1 * side) - size
                    if hi_x < lo_x or hi_y < lo_y:
                        ok = False
                        break
                if config.rows:
                    size, (lo_cx, hi_cx), (lo_cy, hi_cy) = _row_place(
                        region, index=len(placed) - start, count=group.count, size=size, config=config
                    )
                else:
                    lo_cx, hi_cx = x0 * side + half, x1 * side - half
                    lo_cy, hi_cy = y0 * side + half, y1 * side - half
                for _try in range(60):
                    if grid:
                        cx = lo_x + grid * int(rng.integers(int((hi_x - lo_x) // grid) + 1)) + size / 2
                        cy = lo_y + grid * int(rng.integers(int((hi_y - lo_y) // grid) + 1)) + size / 2
                    else:
                        cx = rng.uniform(lo_cx, hi_cx)
                        cy = rng.uniform(lo_cy, hi_cy)
                    gap = config.gap * side
                    if all(
                        abs(cx - p.cx) > (size + p.size) / 2 + gap or abs(cy - p.cy) > (size + p.size) / 2 + gap
                        for p in placed
                    ):
                        placed.append(Placement(color=group.color, shape=group.shape, cx=cx, cy=cy, size=size))
                        break
                else:
                    ok = False
                    break
            if not ok:
                break
        if ok:
            return placed
    raise RuntimeError(f"could not lay out {spec.caption!r} at {side}px; use a larger image_size or smaller objects")


def draw(placements: list[Placement], config: RenderConfig) -> Image.Image:
    """Draw placed objects on the background (4x supersampled, then LANCZOS-downsampled for clean edges)."""
    big = config.image_size * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUND)
    pen = ImageDraw.Draw(image)
    for p in placements:
        cx, cy, r = p.cx * _SUPERSAMPLE, p.cy * _SUPERSAMPLE, p.size * _SUPERSAMPLE / 2
        SHAPES[p.shape].draw(pen, cx, cy, r, COLORS[p.color])
    return image.resize((config.image_size, config.image_size), Image.Resampling.LANCZOS)


def render(spec: PromptSpec, config: RenderConfig, rng: np.random.Generator) -> tuple[Image.Image, list[Placement]]:
    """Lay out and draw ``spec``; returns the RGB image and where each object went."""
    placements = layout(spec, config, rng)
    return draw(placements, config), placements
