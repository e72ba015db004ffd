"""Tiled decoding: decode overlapping latent tiles one at a time and blend them with linear ramps.

Peak activation memory of the conv decoder grows with the latent area (the widest layers run at full pixel
resolution: 128 x 1024 x 1024 floats = 512 MiB per image for the released tokenizers at 1024^2). Decoding tiles of
``tile_size`` x ``tile_size`` latent positions bounds it by the tile area; only the output image is full size.

The result is an approximation: the decoder's GroupNorm layers normalise with statistics of the tile, not of the whole
image, and each tile sees zero padding at its own border. Tiles overlap by ``overlap`` latent positions and are
cross-faded over that band with linear weights, which hides the seams; the error shrinks as tiles grow. A tile at
least as large as the latent decodes it in one piece, exactly like the untiled path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["check_tiling", "default_overlap", "tile_starts", "tiled_decode"]


def default_overlap(tile_size: int) -> int:
    """The overlap used when none is given: a quarter of the tile (latent positions)."""
    return tile_size // 4


def check_tiling(tile_size: int | None, overlap: int | None) -> tuple[int, int] | None:
    """Validate ``(tile_size, overlap)`` in latent positions; ``None`` for no tiling. Returns the resolved pair."""
    if tile_size is None:
        if overlap is not None:
            raise ValueError("tile_overlap was given without tile_size; set tile_size (latent positions) to tile")
        return None
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive int (latent positions, e.g. 32), got {tile_size!r}")
    overlap = default_overlap(tile_size) if overlap is None else overlap
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < tile_size:
        raise ValueError(f"tile_overlap must be an int in [0, tile_size={tile_size}), got {overlap!r}")
    return tile_size, overlap


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` stepping by ``tile - overlap`` and covering ``[0, length)``.

    The last tile is moved back to end exactly at ``length`` (so every tile is full size; it may then overlap its
    neighbour by more than ``overlap``).
    """
    if tile >= length:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _ramp_weights(start: int, size: int, length: int, previous_end: int, next_start: int) -> torch.Tensor:
    """1-D blend weights (float32, ``size`` entries) of one tile along one axis, in output pixels.

    Weights rise linearly over the band shared with the previous tile and fall over the band shared with the next
    (band widths come from the actual neighbours: the last tile may overlap more); at the image border they stay 1.
    Two neighbours' ramps over a shared band sum to 1, and all values are in (0, 1], so normalising by the summed
    weights is always defined.
    """
    w = torch.ones(size)
    positions = torch.arange(start, start + size, dtype=torch.float32) + 0.5
    if start > 0:
        band = max(previous_end - start, 1)
        w = torch.minimum(w, ((positions - start) / band).clamp(max=1.0))
    end = start + size
    if end < length:
        band = max(end - next_start, 1)
        w = torch.minimum(w, ((end - positions) / band).clamp(max=1.0))
    return w


def _axis_weights(length: int, tile: int, overlap: int, patch: int) -> list[tuple[int, int, torch.Tensor]]:
    """Per tile along one axis: (latent start, latent size, pixel weights)."""
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    out = []
    for i, s in enumerate(starts):
        prev_end = (starts[i - 1] + size) * patch if i > 0 else 0
        next_start = starts[i + 1] * patch if i + 1 < len(starts) else length * patch
        out.append((s, size, _ramp_weights(s * patch, size * patch, length * patch, prev_end, next_start)))
    return out


def tiled_decode(
    decode_fn: Callable[[torch.Tensor], torch.Tensor],
    z_BdHW: torch.Tensor,
    *,
    tile_size: int,
    overlap: int,
    patch_size: int,
) -> torch.Tensor:
    """Decode ``z_BdHW`` tile by tile with ``decode_fn`` (latent (B, d, t, t) -> pixels (B, C, t p, t p)).

    Returns the blended pixels ``(B, C, H p, W p)`` (not clamped) in ``decode_fn``'s dtype; blending runs in float32.
    A ``tile_size`` covering the whole latent calls ``decode_fn`` once on the unchanged input.
    """
    B, _, H, W = z_BdHW.shape
    if tile_size >= H and tile_size >= W:
        return decode_fn(z_BdHW)
    rows = _axis_weights(H, tile_size, overlap, patch_size)
    cols = _axis_weights(W, tile_size, overlap, patch_size)
    out: torch.Tensor | None = None
    dtype = z_BdHW.dtype
    weight_sum = torch.zeros(H * patch_size, W * patch_size, device=z_BdHW.device)
    for r0, rh, wr in rows:
        for c0, cw, wc in cols:
            tile = decode_fn(z_BdHW[:, :, r0 : r0 + rh, c0 : c0 + cw])
            if out is None:
                out = torch.zeros(B, tile.shape[1], H * patch_size, W * patch_size, device=z_BdHW.device)
                dtype = tile.dtype
            weight = (wr[:, None] * wc[None, :]).to(z_BdHW.device)
            ys, xs = slice(r0 * patch_size, (r0 + rh) * patch_size), slice(c0 * patch_size, (c0 + cw) * patch_size)
            out[:, :, ys, xs] += tile.float() * weight
            weight_sum[ys, xs] += weight
            del tile
    assert out is not None
    return out.div_(weight_sum).to(dtype)
