"""Output heads: AdaLN before the head, the bitwise Infinite-Vocabulary Classifier, the index classifier.

Bitwise logits (B, L, 2d) are d interleaved pairs [bit0=0, bit0=1, bit1=0, bit1=1, ...] (reference §2.4). The index
head (ablation) scores all 2^d codes; code index i has bit j = (i >> (d-1-j)) & 1, i.e. channel 0 is the most
significant bit (the official index mask 2^(d-1-j)); the conversions are :func:`bsq_tokenizer.quantizers.bits_to_indices`
and :func:`~bsq_tokenizer.quantizers.indices_to_bits`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AdaLNBeforeHead(nn.Module):
    """LN(h) * (1 + scale) + shift with (scale, shift) = Linear(SiLU(cond)) (order: scale, shift)."""

    def __init__(self, embed_dim: int, cond_dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * embed_dim))

    def forward(self, h_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD.float()).view(cond_BD.shape[0], 1, 2, -1).unbind(2)
        return F.layer_norm(h_BLC.float(), (h_BLC.shape[-1],), eps=self.eps) * (1 + scale) + shift


def bit_logit_pairs(logits_BLV: torch.Tensor) -> torch.Tensor:
    """(B, L, 2d) bitwise logits -> (B, L, d, 2) with [..., 0] = score of bit 0 and [..., 1] = score of bit 1."""
    return logits_BLV.unflatten(-1, (-1, 2))
