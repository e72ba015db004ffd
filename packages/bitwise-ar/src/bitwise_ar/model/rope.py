"""RoPE-2D with the official resolution-normalised integer positions (reference §2.6).

Each head of width hd is split in two halves: the first half rotates by the token's row position, the second by its
column position. Rotation pairs are adjacent elements (x[2p], x[2p+1]). Positions are normalised to the last scale of
the 1M schedule of the aspect-ratio template (the "reference grid" (H*, W*)): token (i, j) of a scale (h, w) sits at
row round(i * H*/h), column round(j * W*/w) with half-to-even rounding, so coarse scales share positions with fine ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def rope_inverse_frequencies(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """theta_m = base^(-2m / (hd/2)) for m < hd/4, float32 (hd/4,)."""
    half = head_dim // 2
    return 1.0 / (base ** (torch.arange(0, half, 2, dtype=torch.int64).float() / half))


def scale_positions(h: int, w: int, reference: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column positions (each (h*w,), int64, row-major) of the tokens of an h x w scale."""
    ref_h, ref_w = reference
    # float32 products then round-half-to-even, exactly as the official table is built.
    rows = (torch.arange(h) * (ref_h / h)).round().long()
    cols = (torch.arange(w) * (ref_w / w)).round().long()
    return rows[:, None].expand(h, w).reshape(-1), cols[None, :].expand(h, w).reshape(-1)


def rope_cos_sin(
    schedule: Sequence[tuple[int, int]],
    reference: tuple[int, int],
    head_dim: int,
    base: float = 10000.0,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (L, hd/2) float32 for all tokens of ``schedule`` (scales concatenated)."""
    inv_freq = rope_inverse_frequencies(head_dim, base)
    rows, cols = zip(*(scale_positions(h, w, reference) for h, w in schedule), strict=True)
    row_L, col_L = torch.cat(rows).float(), torch.cat(cols).float()
    angles_Lc = torch.cat([torch.outer(row_L, inv_freq), torch.outer(col_L, inv_freq)], dim=-1)
    return torch.cos(angles_Lc).to(device), torch.sin(angles_Lc).to(device)


def apply_rope_2d(x_BHLc: torch.Tensor, cos_Lc: torch.Tensor, sin_Lc: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of the last axis of ``x`` (B, H, L, hd) by the angles of ``cos``/``sin`` (L, hd/2).

    Computed in float32; the result is float32.
    """
    x = x_BHLc.float().unflatten(-1, (-1, 2))
    x0, x1 = x[..., 0], x[..., 1]
    out = torch.stack((cos_Lc * x0 - sin_Lc * x1, sin_Lc * x0 + cos_Lc * x1), dim=-1)
    return out.flatten(-2)
