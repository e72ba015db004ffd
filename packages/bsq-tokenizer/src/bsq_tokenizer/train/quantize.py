"""Differentiable multi-scale residual BSQ for tokenizer training, with per-scale entropy and commitment losses.

Same arithmetic as :func:`bsq_tokenizer.multiscale.multiscale_quantize` (area down, sign, bilinear up; reference §3.3)
but with gradients: each scale's residual ``r_k`` is L2-normalised over channels to ``u_k``, quantised to
``q_k = sign(u_k) / sqrt(d)`` with a straight-through estimator, and the residual chain keeps its gradient (BitVAE's
``remove_residual_detach``). Losses per scale (BitVAE / BSQ-ViT Eq. 8, reference §3.5):

* commitment ``MSE(u_k, sg(q_k))``;
* entropy penalty ``H_per_sample - H_codebook`` with the factorised bit probabilities
  ``p = sigmoid(-4 u / sqrt(d) * inv_temperature)`` (O(d), no 2^d codebook).

Random scale dropout ("stochastic depth" of the BitVAE recipe): every scale except the last is skipped with
probability ``drop_prob``; dropped scales add neither codes nor losses, so the decoder learns many pyramid shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bsq_tokenizer.multiscale import resize_area, resize_bilinear


@dataclass
class QuantizeOutput:
    """Summed (straight-through) codes for the decoder and the per-scale losses (``None`` for dropped scales)."""

    summed_BdHW: torch.Tensor
    commitment: list[torch.Tensor | None]
    entropy: list[torch.Tensor | None]
    kept: list[bool]

    def mean_loss(self, commitment_weight: float, entropy_weight: float) -> torch.Tensor:
        """Weighted per-scale quantiser loss averaged over the kept scales."""
        terms = [
            commitment_weight * c + entropy_weight * e
            for c, e in zip(self.commitment, self.entropy, strict=True)
            if c is not None and e is not None
        ]
        return torch.stack(terms).mean()


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p + 1e-8) + (1 - p) * torch.log(1 - p + 1e-8))


def entropy_penalty(u_BdHW: torch.Tensor, inv_temperature: float = 100.0) -> torch.Tensor:
    """Factorised BSQ entropy penalty ``H_per_sample - H_codebook`` (minimise: confident bits, balanced codebook)."""
    d = u_BdHW.shape[1]
    p = torch.sigmoid(-4.0 * u_BdHW / math.sqrt(d) * inv_temperature)  # P(bit = 0) per position and bit
    per_sample = _binary_entropy(p).sum(1).mean()
    codebook = _binary_entropy(p.mean(dim=(0, 2, 3))).sum()
    return per_sample - codebook


def quantize_for_training(
    features_BdHW: torch.Tensor,
    schedule: Sequence[tuple[int, int]],
    *,
    drop_prob: float = 0.0,
    generator: torch.Generator | None = None,
    inv_temperature: float = 100.0,
) -> QuantizeOutput:
    """Multi-scale residual BSQ with straight-through gradients (see the module docstring)."""
    if not 0.0 <= drop_prob < 1.0:
        raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
    full = (features_BdHW.shape[-2], features_BdHW.shape[-1])
    if tuple(schedule[-1]) != full:
        raise ValueError(f"the last scale {tuple(schedule[-1])} must equal the latent size {full}")
    d = features_BdHW.shape[1]
    residual = features_BdHW.float()
    summed = torch.zeros_like(residual)
    commitment: list[torch.Tensor | None] = []
    entropy: list[torch.Tensor | None] = []
    kept: list[bool] = []
    for k, hw in enumerate(schedule):
        last = k == len(schedule) - 1
        if not last and drop_prob > 0 and float(torch.rand((), generator=generator)) < drop_prob:
            commitment.append(None)
            entropy.append(None)
            kept.append(False)
            continue
        r = residual if tuple(hw) == full else resize_area(residual, hw)
        u = F.normalize(r, dim=1, eps=1e-6)
        q = torch.where(u > 0, 1.0, -1.0) / math.sqrt(d)
        q_st = u + (q - u).detach()
        commitment.append(F.mse_loss(u, q.detach()))
        entropy.append(entropy_penalty(u, inv_temperature))
        kept.append(True)
        up = q_st if tuple(hw) == full else resize_bilinear(q_st, full)
        residual = residual - up
        summed = summed + up
    return QuantizeOutput(summed_BdHW=summed, commitment=commitment, entropy=entropy, kept=kept)
