"""Image editing by partial-scale conditioning: pixel masks -> per-scale keep-masks, out-painting canvases.

An edit keeps the source image's bits on the tokens outside a mask and samples the rest (VAR's zero-shot in-painting,
here on bits). The pixel mask (True = redraw) is reduced to each scale's token grid by **area**: a token's masked
fraction is the mean of the mask over the pixels it covers (adaptive average pooling; exact when the grid divides
the image, neighbouring windows overlap by a pixel otherwise), and the token is redrawn when that fraction is
``>= threshold`` (default :data:`MASK_THRESHOLD` = 0.5).

Why 0.5: it assigns each token to whichever side covers most of it, so at every scale the redrawn region is the mask
rounded to that grid (off by at most half a token) and at the finest scale it converges to the pixel mask. A lower
threshold (e.g. "any overlap") redraws the 1x1 start scale and the other coarse scales for every non-empty mask; the
kept fine-scale bits outside the mask were encoded as residuals *of the source's coarse scales*, so replacing those
shifts colours over the whole image. A higher one keeps tokens that are mostly masked, whose source bits then pin
remnants of the old content into the region. ``bench/bench_edit.py --threshold`` measures the trade-off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

EditMode = Literal["inpaint", "outpaint", "variation"]
EDIT_MODES: tuple[str, ...] = ("inpaint", "outpaint", "variation")
MASK_THRESHOLD = 0.5
"""A token is redrawn when at least this fraction of its area is masked (see the module docstring)."""


def read_mask(mask: Any, size: tuple[int, int]) -> torch.Tensor:
    """A binary mask (PIL image, array or tensor; True / 1 / 255 = redraw) as a bool ``(H, W)`` tensor.

    Raises ValueError when it is not 2-D (or a single-channel image), does not match ``size`` = (H, W), or holds
    values other than {0, 1} (or {0, 255} for 8-bit images): a soft or anti-aliased mask must be thresholded first.
    """
    if type(mask).__module__.startswith("PIL."):
        if mask.mode not in ("1", "L", "LA", "RGB", "RGBA", "P"):
            raise ValueError(f"mask image mode {mask.mode!r} is not supported; save the mask as a grey-scale PNG")
        mask = np.asarray(mask.convert("L"))
    values = torch.as_tensor(np.array(mask)) if not isinstance(mask, torch.Tensor) else mask.detach().cpu()
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2:
        raise ValueError(f"a mask is one channel (H, W), got shape {tuple(values.shape)}")
    if tuple(values.shape) != tuple(size):
        raise ValueError(
            f"the mask is {values.shape[1]}x{values.shape[0]} (WxH) but the image is {size[1]}x{size[0]}; "
            "draw the mask on the image itself"
        )
    if values.dtype == torch.bool:
        return values.clone()
    unique = set(torch.unique(values.float()).tolist())
    if unique <= {0.0, 1.0}:
        return values != 0
    if values.dtype == torch.uint8 and unique <= {0.0, 255.0}:
        return values != 0
    shown = sorted(unique)[:4]
    raise ValueError(
        f"the mask must be binary (0/1, or 0/255 for 8-bit images), got values such as {shown}; threshold it first"
    )


def token_masks(
    mask_HW: torch.Tensor, schedule: Sequence[tuple[int, int]], threshold: float = MASK_THRESHOLD
) -> list[torch.Tensor]:
    """Per scale, the bool ``(h, w)`` tokens to redraw: masked area fraction ``>= threshold`` (module docstring)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"mask threshold must be in (0, 1] (a masked area fraction), got {threshold}")
    area = mask_HW.float()[None, None]
    return [F.adaptive_avg_pool2d(area, (h, w))[0, 0] >= threshold for h, w in schedule]


def outpaint_canvas(
    image_13HW: torch.Tensor, canvas_size: tuple[int, int], offset: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(canvas ``(1, 3, H, W)`` with the image placed at ``offset`` = (top, left) on mid-grey, redraw-mask ``(H, W)``).

    ``offset`` defaults to the centre (rounded down). The new area is masked; the image's own pixels are not.
    """
    H, W = (int(v) for v in canvas_size)
    h, w = image_13HW.shape[-2:]
    if h > H or w > W:
        raise ValueError(f"the out-painting canvas {W}x{H} is smaller than the image {w}x{h}; make it larger")
    top, left = ((H - h) // 2, (W - w) // 2) if offset is None else (int(v) for v in offset)
    if not (0 <= top <= H - h and 0 <= left <= W - w):
        raise ValueError(
            f"offset (top={top}, left={left}) puts the {w}x{h} image outside the {W}x{H} canvas; "
            f"top must be in [0, {H - h}] and left in [0, {W - w}]"
        )
    canvas = torch.zeros(1, 3, H, W, dtype=image_13HW.dtype)  # 0 = mid-grey in [-1, 1]
    canvas[..., top : top + h, left : left + w] = image_13HW
    redraw = torch.ones(H, W, dtype=torch.bool)
    redraw[top : top + h, left : left + w] = False
    return canvas, redraw
