"""Bit quantisers (BSQ, LFQ), integer indices, entropy penalties and the commitment loss."""

from __future__ import annotations

import torch

__all__ = ["bits_to_indices", "indices_to_bits"]


def _weights(d: int, device: torch.device) -> torch.Tensor:
    # official index mask: bit j (latent channel j) has weight 2^(d-1-j), i.e. channel 0 is the most significant bit
    return 2 ** torch.arange(d - 1, -1, -1, device=device, dtype=torch.int64)


def bits_to_indices(bits_BhwD: torch.Tensor) -> torch.Tensor:
    """Bits ``(..., d)`` -> int64 indices ``(...)``, MSB first (channel 0 has weight 2^(d-1)); needs d <= 63."""
    d = bits_BhwD.shape[-1]
    if d > 63:
        raise ValueError(f"integer indices need d <= 63 bits to fit in int64, got d={d}; keep the bits instead")
    return (bits_BhwD.to(torch.int64) * _weights(d, bits_BhwD.device)).sum(-1)


def indices_to_bits(indices: torch.Tensor, d: int) -> torch.Tensor:
    """Inverse of :func:`bits_to_indices`: int indices ``(...)`` -> uint8 bits ``(..., d)``, MSB first."""
    if d > 63:
        raise ValueError(f"integer indices need d <= 63 bits to fit in int64, got d={d}")
    if indices.is_floating_point():
        raise ValueError("indices must be an integer tensor")
    idx = indices.to(torch.int64)
    if idx.numel() and (idx.min() < 0 or idx.max() >= 2**d):
        raise ValueError(f"indices must lie in [0, 2^{d}) for d={d}")
    return ((idx.unsqueeze(-1) // _weights(d, idx.device)) % 2).to(torch.uint8)
