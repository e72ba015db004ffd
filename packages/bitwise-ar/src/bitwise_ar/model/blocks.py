"""The transformer block: shared-AdaLN self-attention, cross-attention to text, FFN (reference §2.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bitwise_ar.model.attention import CrossAttention, SelfAttention, SelfAttentionContext, TextMemory


def ada_layer_norm(x_BLC: torch.Tensor, scale_B1C: torch.Tensor, shift_B1C: torch.Tensor, eps: float) -> torch.Tensor:
    """LN(x) * (1 + scale) + shift with a non-affine LayerNorm, in float32."""
    return F.layer_norm(x_BLC.float(), (x_BLC.shape[-1],), eps=eps) * (1 + scale_B1C) + shift_B1C


class FP32LayerNorm(nn.LayerNorm):
    """An affine LayerNorm computed in float32 whatever the parameter dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``p`` (training only).

    Randomness comes from ``generator`` when set (the trainer assigns one), else from torch's default generator.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), generator=self.generator, device="cpu") < keep
        return x * mask.to(device=x.device, dtype=x.dtype) / keep

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


class FFN(nn.Module):
    """fc1 -> GELU (tanh approximation) -> fc2."""

    def __init__(self, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x.to(self.fc1.weight.dtype)), approximate="tanh"))


class InfinityBlock(nn.Module):
    """Pre-norm block with the official shared AdaLN.

    The modulation ``ada_gss + shared_ada_lin(cond)`` (B, 1, 6, C) is split in the official order gamma1, gamma2,
    scale1, scale2, shift1, shift2. The residual stream stays float32 even when the block weights are bf16.
    """

    def __init__(self, embed_dim: int, num_heads: int, ffn_hidden: int, eps: float, drop_path: float) -> None:
        super().__init__()
        self.eps = eps
        self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, embed_dim))
        self.sa = SelfAttention(embed_dim, num_heads)
        self.ca = CrossAttention(embed_dim, embed_dim, num_heads)
        self.ffn = FFN(embed_dim, ffn_hidden)
        self.ca_norm = FP32LayerNorm(embed_dim, eps=eps)
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x_BLC: torch.Tensor,
        ada_B16C: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        context: SelfAttentionContext,
        text: TextMemory,
        text_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = (self.ada_gss.float() + ada_B16C).unbind(2)
        h = self.sa(ada_layer_norm(x_BLC, scale1, shift1, self.eps), rope, context)
        x_BLC = x_BLC + self.drop_path(h.float() * gamma1)
        x_BLC = x_BLC + self.ca(self.ca_norm(x_BLC), text, text_kv).float()
        h = self.ffn(ada_layer_norm(x_BLC, scale2, shift2, self.eps))
        return x_BLC + self.drop_path(h.float() * gamma2)
