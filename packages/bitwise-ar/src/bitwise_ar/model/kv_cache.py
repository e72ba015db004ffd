"""A preallocated key/value cache for next-scale inference.

Buffers for the whole sequence are allocated once per image (no ``torch.cat`` per scale, unlike the official code,
which copies the whole cache at every scale). The queries of a scale attend to every cached token of earlier scales and
to all tokens of their own scale, which is exactly the block-causal training mask restricted to that scale.
"""

from __future__ import annotations

import torch

from bitwise_ar.model.attention_backend import AttentionKernel, sdpa_attention


class KVCache:
    """Keys and values of one self-attention layer, (B, H, max_len, hd) each, filled scale by scale.

    ``kernel`` computes the (mask-free) attention: SDPA by default, flash-attn via the model's attention backend.
    """

    def __init__(
        self,
        batch_size: int,
        num_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
        kernel: AttentionKernel = sdpa_attention,
    ) -> None:
        self.kernel = kernel
        shape = (batch_size, num_heads, max_len, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def reset(self) -> None:
        self.length = 0

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        """Append this scale's k, v (B, H, n, hd) and attend q to all cached tokens (no mask needed)."""
        n = k.shape[2]
        end = self.length + n
        if end > self.max_len:
            raise RuntimeError(f"KV cache overflow: {end} tokens > capacity {self.max_len}")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.kernel(q, self.k[:, :, :end], self.v[:, :, :end], scale)
