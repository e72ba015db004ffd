"""Self-attention (cosine, RoPE-2D) and cross-attention to text, with pluggable attention contexts.

A *context* decides which keys each query sees: the whole block-causal training sequence through one masked SDPA call
(:class:`MaskedAttention`), the same exactly but chunked per scale with no mask (:class:`ChunkedAttention`),
FlexAttention with a block mask (:class:`FlexBlockCausalAttention`, optional), or a KV cache at inference
(:class:`bitwise_ar.model.kv_cache.KVCache`). The layers themselves only project, normalise and rotate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from bitwise_ar.model.attention_backend import (
    AttentionKernel,
    PackedTextKV,
    flash_varlen_cross_attention,
    sdpa_attention,
)
from bitwise_ar.model.rope import apply_rope_2d

# exp(s) of the per-head cosine-attention logit scale is capped at 100 (official max_scale_mul = ln 100).
MAX_LOG_SCALE = math.log(100.0)


class SelfAttentionContext(Protocol):
    """Runs softmax(q k^T * scale) v for the query tokens of one layer call; q, k, v are (B, H, n, hd)."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor: ...


@dataclass
class MaskedAttention:
    """Dense block-causal attention over the whole packed sequence with a boolean (L, L) mask (SDPA)."""

    mask_LL: torch.Tensor

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask_LL, scale=scale)


@dataclass
class ChunkedAttention:
    """Exact block-causal attention without a mask: scale k's queries attend to keys [0, ends[k]).

    Skips the masked-out upper blocks (~1/3 of the dense FLOPs) and never materialises an L x L mask. Each chunk is
    mask-free, so ``kernel`` may be flash-attn (:mod:`bitwise_ar.model.attention_backend`).
    """

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    kernel: AttentionKernel = sdpa_attention

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        outs = [
            self.kernel(q[:, :, s:e], k[:, :, :e], v[:, :, :e], scale)
            for s, e in zip(self.starts, self.ends, strict=True)
        ]
        return torch.cat(outs, dim=2)


class FlexBlockCausalAttention:
    """Block-causal attention through ``torch.nn.attention.flex_attention`` (compiled; best on GPU for training)."""

    def __init__(self, scale_ids_L: torch.Tensor, batch_size: int, num_heads: int) -> None:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        ids = scale_ids_L

        def mask_mod(b, h, q_idx, kv_idx):
            return ids[kv_idx] <= ids[q_idx]

        length = int(ids.numel())
        self.block_mask = create_block_mask(mask_mod, None, None, length, length, device=ids.device)
        self._flex = torch.compile(flex_attention, dynamic=False)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        return self._flex(q, k, v, block_mask=self.block_mask, scale=scale)


class SelfAttention(nn.Module):
    """Cosine self-attention with RoPE-2D (reference §2.3).

    q and k are L2-normalised per head, q is multiplied by exp(min(s_h, ln 100)) with a learned per-head s_h, then both
    are rotated; softmax uses no further 1/sqrt(hd) factor. k has no bias (the zero buffer ``zero_k_bias`` is kept so
    that official state dicts load unchanged).
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.mat_qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), math.log(4.0)))
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(
        self, x_BLC: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], context: SelfAttentionContext
    ) -> torch.Tensor:
        """x (B, L, C) -> (B, L, C) in the layer's weight dtype; ``rope`` holds the cos/sin rows of these L tokens."""
        B, L, C = x_BLC.shape
        dtype = self.mat_qkv.weight.dtype
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias)).to(dtype)
        qkv = F.linear(x_BLC.to(dtype), self.mat_qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd)
        scale_mul = self.scale_mul_1H11.float().clamp_max(MAX_LOG_SCALE).exp()
        q = F.normalize(q.float(), dim=-1, eps=1e-12) * scale_mul
        k = F.normalize(k.float(), dim=-1, eps=1e-12)
        cos, sin = rope
        q, k = apply_rope_2d(q, cos, sin), apply_rope_2d(k, cos, sin)
        out = context.attend(q.to(dtype), k.to(dtype), v, 1.0)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


@dataclass
class TextMemory:
    """Text tokens the image tokens cross-attend to: padded (B, T, C) rows plus a key mask (B, T), True = real.

    ``kv`` optionally holds each block's projected keys/values, computed once per image at inference: padded
    (B, H, T, hd) pairs for SDPA, or :class:`PackedTextKV` for flash-attn's varlen kernel. ``lengths`` are the prompts'
    token counts (Python ints, for packing without a host sync).
    """

    memory_BTC: torch.Tensor
    key_mask_BT: torch.Tensor
    kv: list[tuple[torch.Tensor, torch.Tensor] | PackedTextKV] | None = None
    lengths: tuple[int, ...] | None = None

    @property
    def attn_mask(self) -> torch.Tensor:
        return self.key_mask_BT[:, None, None, :]


class CrossAttention(nn.Module):
    """Softmax cross-attention from image tokens to the (projected) text tokens of the same prompt (reference §2.3)."""

    def __init__(self, embed_dim: int, kv_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.mat_q = nn.Linear(embed_dim, embed_dim)
        self.mat_kv = nn.Linear(kv_dim, 2 * embed_dim, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)

    def project_memory(self, memory_BTC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, T, hd) of the text memory for this layer."""
        B, T, _ = memory_BTC.shape
        dtype = self.mat_kv.weight.dtype
        bias = torch.cat((self.zero_k_bias, self.v_bias)).to(dtype)
        kv = F.linear(memory_BTC.to(dtype), self.mat_kv.weight, bias).view(B, T, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        return k, v

    def forward(
        self,
        x_BLC: torch.Tensor,
        text: TextMemory,
        kv: tuple[torch.Tensor, torch.Tensor] | PackedTextKV | None = None,
    ) -> torch.Tensor:
        B, L, C = x_BLC.shape
        dtype = self.mat_q.weight.dtype
        q = self.mat_q(x_BLC.to(dtype)).view(B, L, self.num_heads, self.head_dim).transpose(1, 2)
        if isinstance(kv, PackedTextKV):
            if kv.cu_seqlens_k.shape[0] != B + 1:
                raise ValueError(f"text memory batch {kv.cu_seqlens_k.shape[0] - 1} != image batch {B}")
            out = flash_varlen_cross_attention(q, kv, self.head_dim**-0.5)
            return self.proj(out.transpose(1, 2).reshape(B, L, C))
        k, v = kv if kv is not None else self.project_memory(text.memory_BTC)
        if k.shape[0] != B:  # the same text for every query row would be a caller bug; fail loudly
            raise ValueError(f"text memory batch {k.shape[0]} != image batch {B}")
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=text.attn_mask)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))
