"""3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3), for CPU inference.

A 3x3, stride-1, padding-1 convolution computes each 2x2 block of outputs from a 4x4 tile of inputs. Winograd's
algorithm (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016) transforms the tile
(``V = B^T d B``) and the filter (``U = G g G^T``) so that the block becomes ``A^T (U . V) A``: 16 multiplies
instead of 36, i.e. 2.25x fewer multiply-adds. Summed over input channels, the 16 element-wise products are 16
matrix products ``U[k] (K, C) @ V[k] (C, tiles)``, which is where the time goes.

The transforms only add and halve (entries 0, +-1, +-1/2), so the result differs from the direct convolution by
float rounding alone: a few 1e-6 on activations of order 1 (tested against ``F.conv2d``). On one CPU core the
direct convolution of the d32 tokenizer's layers runs at ~90-115 GFLOP/s, near the core's peak, so fewer
multiplies is the only way to make it faster; measured 1.25-1.45x per layer.

The work is done in bands of tile rows sized so that the transformed band stays in cache: one pass over the whole
image for each transform step would be limited by memory bandwidth and lose the gain.
"""

from __future__ import annotations

import torch

__all__ = ["winograd_conv3x3", "winograd_filter"]

BAND_TILES = 256  # tiles per band (times the batch): GEMMs of 256-512 columns ran fastest, and the band stays in cache


def winograd_filter(weight_KC33: torch.Tensor) -> torch.Tensor:
    """``U = G g G^T`` for every (output, input) channel pair: ``(K, C, 3, 3)`` -> ``(16, K, C)``, index 4 * i + j
    for the transformed tile position (i, j). ``G`` has rows (1, 0, 0), (1/2, 1/2, 1/2), (1/2, -1/2, 1/2), (0, 0, 1)."""
    if weight_KC33.dim() != 4 or weight_KC33.shape[-2:] != (3, 3):
        raise ValueError(f"winograd_filter needs a (K, C, 3, 3) weight, got {tuple(weight_KC33.shape)}")

    def g_times(taps: tuple[torch.Tensor, torch.Tensor, torch.Tensor], dim: int) -> torch.Tensor:
        g0, g1, g2 = taps
        return torch.stack((g0, (g0 + g1 + g2) * 0.5, (g0 - g1 + g2) * 0.5, g2), dim)

    rows = g_times(weight_KC33.unbind(2), 0)  # (4, K, C, 3)
    tiles = g_times(rows.unbind(3), 1)  # (4, 4, K, C)
    return tiles.reshape(16, *weight_KC33.shape[:2]).contiguous()


def winograd_conv3x3(
    x_BCHW: torch.Tensor,
    filter_16KC: torch.Tensor,
    bias_K: torch.Tensor | None = None,
    *,
    band_tiles: int = BAND_TILES,
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for a 3x3 weight given as ``winograd_filter(weight)``.

    Any height and width (odd sizes are computed on a tile grid one row / column larger and cropped). Without
    autograd support: this is the inference path; training keeps ``F.conv2d``.
    """
    B, C, H, W = x_BCHW.shape
    if filter_16KC.dim() != 3 or filter_16KC.shape[0] != 16 or filter_16KC.shape[2] != C:
        raise ValueError(f"filter {tuple(filter_16KC.shape)} is not a (16, K, {C}) Winograd filter for {C} channels")
    K = filter_16KC.shape[1]
    if B * H * W == 0:
        return x_BCHW.new_empty(B, K, H, W)
    tiles_h, tiles_w = (H + 1) // 2, (W + 1) // 2
    padded_w = 2 * tiles_w + 2
    band = max(1, min(tiles_h, band_tiles // (B * tiles_w)))
    out = x_BCHW.new_empty(B, K, tiles_h, 2, tiles_w, 2)
    # input rows 2 * i0 - 1 ... 2 * (i0 + n) of the band, zero-padded left / right (and above / below at the edges)
    padded = x_BCHW.new_zeros(B, C, 2 * band + 2, padded_w)
    rows_T = x_BCHW.new_empty(4, B, C, band, padded_w)
    filter_16_1KC = filter_16KC.unsqueeze(1)
    buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for i0 in range(0, tiles_h, band):
        n = min(band, tiles_h - i0)
        lo, hi = 2 * i0 - 1, 2 * (i0 + n) + 1
        pad = padded[:, :, : 2 * n + 2]
        if lo < 0 or hi > H:
            pad.zero_()
        pad[:, :, max(lo, 0) - lo : min(hi, H) - lo, 1 : W + 1] = x_BCHW[:, :, max(lo, 0) : min(hi, H)]
        # V = B^T d B; B^T has rows (1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1). Rows first ...
        d0, d1, d2, d3 = (pad[:, :, k : k + 2 * n : 2] for k in range(4))
        T = rows_T[:, :, :, :n]
        torch.sub(d0, d2, out=T[0])
        torch.add(d1, d2, out=T[1])
        torch.sub(d2, d1, out=T[2])
        torch.sub(d1, d3, out=T[3])
        if n not in buffers:
            buffers[n] = (x_BCHW.new_empty(4, 4, B, C, n, tiles_w), x_BCHW.new_empty(16, B, K, n * tiles_w))
        V, M = buffers[n]
        # ... then columns, for the four row results at once
        t0, t1, t2, t3 = (T[..., k : k + 2 * tiles_w : 2] for k in range(4))
        torch.sub(t0, t2, out=V[:, 0])
        torch.add(t1, t2, out=V[:, 1])
        torch.sub(t2, t1, out=V[:, 2])
        torch.sub(t1, t3, out=V[:, 3])
        torch.matmul(filter_16_1KC, V.view(16, B, C, n * tiles_w), out=M)
        if bias_K is not None:
            # A^T = ((1, 1, 1, 0), (0, 1, -1, -1)) has ones in column 1 of both rows: a constant added at tile
            # position (1, 1) reaches each of the four outputs exactly once
            M[5] += bias_K.view(1, K, 1)
        # Y = A^T M A: along the first tile index, then the second, written interleaved into the output
        M6 = M.view(4, 4, B, K, n, tiles_w)
        s0 = M6[0] + M6[1]
        s0 += M6[2]
        s1 = M6[1] - M6[2]
        s1 -= M6[3]
        o = out[:, :, i0 : i0 + n]
        for p, s in ((0, s0), (1, s1)):
            torch.add(s[0] + s[1], s[2], out=o[:, :, :, p, :, 0])
            torch.sub(s[1] - s[2], s[3], out=o[:, :, :, p, :, 1])
    y = out.view(B, K, 2 * tiles_h, 2 * tiles_w)
    if 2 * tiles_h != H or 2 * tiles_w != W:
        y = y[:, :, :H, :W].contiguous()
    return y
