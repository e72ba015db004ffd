"""Packed variable-length text and the text-conditioning layers (reference §2.1).

Prompts are kept *packed*: the valid rows of every prompt concatenated, (N, Ct) with N = sum of lengths, plus the
lengths. No padding row ever enters an attention: the pool and every cross-attention mask keys per prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class PackedText:
    """Text-encoder features of B prompts, packed: ``features_NC`` rows [cu[i], cu[i+1]) belong to prompt i."""

    features_NC: torch.Tensor
    lengths: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.features_NC.ndim != 2:
            raise ValueError(f"packed text features must be (N, Ct), got shape {tuple(self.features_NC.shape)}")
        if not self.lengths:
            raise ValueError("PackedText needs at least one prompt")
        if min(self.lengths) < 1:
            raise ValueError(f"every prompt needs at least one token, got lengths {list(self.lengths)}")
        if sum(self.lengths) != self.features_NC.shape[0]:
            raise ValueError(f"lengths sum to {sum(self.lengths)} but there are {self.features_NC.shape[0]} rows")

    @classmethod
    def from_padded(cls, features_BTC: torch.Tensor, lengths: Sequence[int]) -> PackedText:
        """Pack zero-padded (B, T, Ct) features; prompt i uses rows [0, lengths[i])."""
        lengths = tuple(int(n) for n in lengths)
        if features_BTC.ndim != 3 or features_BTC.shape[0] != len(lengths):
            raise ValueError(f"expected (B={len(lengths)}, T, Ct) features, got {tuple(features_BTC.shape)}")
        if max(lengths) > features_BTC.shape[1]:
            raise ValueError(f"a length {max(lengths)} exceeds the padded width {features_BTC.shape[1]}")
        return cls(torch.cat([f[:n] for f, n in zip(features_BTC, lengths, strict=True)]), lengths)

    @classmethod
    def from_list(cls, features: Sequence[torch.Tensor]) -> PackedText:
        """Pack a list of (T_i, Ct) tensors."""
        return cls(torch.cat(list(features)), tuple(int(f.shape[0]) for f in features))

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    @property
    def max_len(self) -> int:
        return max(self.lengths)

    @property
    def cu_seqlens(self) -> torch.Tensor:
        """int32 (B+1,) offsets with a leading 0 (the flash-attn varlen convention)."""
        return F.pad(torch.tensor(self.lengths).cumsum(0), (1, 0)).to(torch.int32)

    def split(self) -> list[torch.Tensor]:
        return list(torch.split(self.features_NC, list(self.lengths)))

    def to_padded(self, rows_NC: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) zero-padded copy of ``rows_NC`` (default: the features) and the key mask (B, T), True = real."""
        rows = self.features_NC if rows_NC is None else rows_NC
        lengths = torch.tensor(self.lengths, device=rows.device)
        mask_BT = torch.arange(self.max_len, device=rows.device)[None, :] < lengths[:, None]
        padded = rows.new_zeros(self.batch_size, self.max_len, rows.shape[-1])
        padded[mask_BT] = rows
        return padded, mask_BT

    def to(self, *args, **kwargs) -> PackedText:
        return PackedText(self.features_NC.to(*args, **kwargs), self.lengths)

    def cat(self, other: PackedText) -> PackedText:
        """The batch of these prompts followed by ``other``'s (for [cond; uncond] CFG batches)."""
        return PackedText(torch.cat((self.features_NC, other.features_NC)), self.lengths + other.lengths)


class RMSNorm(nn.Module):
    """y = x * rsqrt(mean(x^2) + eps) * weight, in float32 (official ``text_norm``)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()


class PoolAttention(nn.Module):
    """Attention pooling with one learned query per head (no query projection) over a prompt's text tokens."""

    def __init__(self, embed_dim: int, kv_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.mat_q = nn.Parameter(torch.zeros(1, num_heads, self.head_dim))
        self.mat_kv = nn.Linear(kv_dim, 2 * embed_dim, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, text_BTC: torch.Tensor, key_mask_BT: torch.Tensor) -> torch.Tensor:
        B, T, _ = text_BTC.shape
        bias = torch.cat((self.zero_k_bias, self.v_bias))
        kv = F.linear(text_BTC, self.mat_kv.weight, bias).view(B, T, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, P, T, hd)
        q = self.mat_q.to(k.dtype).unsqueeze(2).expand(B, -1, 1, -1)  # (B, P, 1, hd)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask_BT[:, None, None, :])
        return self.proj(out.reshape(B, -1))


class TextAttentivePool(nn.Module):
    """Pooled text condition cond_BD (also the start-token content): attention pooling, then a projection."""

    def __init__(self, text_channels: int, cond_dim: int, num_heads: int) -> None:
        super().__init__()
        self.ca = PoolAttention(cond_dim, text_channels, num_heads)

    def forward(self, text_BTC: torch.Tensor, key_mask_BT: torch.Tensor) -> torch.Tensor:
        return self.ca(text_BTC, key_mask_BT)
