"""Bit quantisers (BSQ, LFQ), integer indices, entropy penalties and the commitment loss.

Notation: x ``(N, d)`` are N token vectors (use :func:`tokens_last` to turn a ``(B, d, h, w)`` map into them),
``s`` the code scale (``1/sqrt(d)`` for BSQ, 1 for LFQ), ``tau`` the inverse temperature.

*BSQ* (binary spherical quantisation) works on ``u = x / ||x||`` and emits ``q = s * sign(u)`` with sign(0) = -1;
*LFQ* (lookup-free quantisation) emits ``q = sign(x)`` directly. Both pass gradients straight through.

Entropy penalty (MAGVIT-v2 / BSQ-ViT). With the soft assignment ``p(c | x) ∝ exp(-tau ||c - x||^2)`` over the 2^d
codes (all of equal norm), ``p`` factorises over bits exactly: ``P(bit_j = 1) = sigmoid(4 tau s x_j)``. Hence

* the per-sample entropy ``H_ps = mean_n H(p(. | x_n)) = mean_n sum_j h(P_nj)`` is computed exactly in O(N d);
* the codebook entropy ``H_cb = H(mean_n p(. | x_n))`` needs the 2^d-way average; the factorised estimate
  ``sum_j h(mean_n P_nj)`` (BSQ-ViT Eq. 8) is an *upper bound* (subadditivity) and costs O(N d), with O(d) state.

:func:`exact_entropy` enumerates all 2^d codes and is the oracle for small d. Entropies are in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BSQ",
    "LFQ",
    "QuantizerOutput",
    "bit_probabilities",
    "bits_to_indices",
    "commitment_loss",
    "entropy_penalty",
    "exact_entropy",
    "factorized_entropy",
    "indices_to_bits",
    "indices_to_codes",
    "tokens_last",
]

_EXACT_MAX_BITS = 20


def _weights(d: int, device: torch.device) -> torch.Tensor:
    # official index mask: bit j (latent channel j) has weight 2^(d-1-j), i.e. channel 0 is the most significant bit
    return 2 ** torch.arange(d - 1, -1, -1, device=device, dtype=torch.int64)


# The one bits <-> index conversion of the project (tokenizer codes, the AR model's index head and its loss, metrics).
def bits_to_indices(bits: torch.Tensor) -> torch.Tensor:
    """Bits ``(..., d)`` -> int64 indices ``(...)``, MSB first (channel 0 has weight 2^(d-1)); needs d <= 63."""
    d = bits.shape[-1]
    if d > 63:
        raise ValueError(f"integer indices need d <= 63 bits to fit in int64, got d={d}; keep the bits instead")
    return (bits.to(torch.int64) * _weights(d, bits.device)).sum(-1)


def indices_to_bits(indices: torch.Tensor, d: int, *, check_range: bool = True) -> torch.Tensor:
    """Inverse of :func:`bits_to_indices`: int indices ``(...)`` -> uint8 bits ``(..., d)``, MSB first.

    ``check_range=False`` skips the check that every index lies in [0, 2^d) (it reads the values, a device sync on
    GPU); use it for indices that are in range by construction, e.g. an argmax or a sample over 2^d classes.
    """
    if d > 63:
        raise ValueError(f"integer indices need d <= 63 bits to fit in int64, got d={d}")
    if indices.is_floating_point():
        raise ValueError("indices must be an integer tensor")
    idx = indices.to(torch.int64)
    if check_range and idx.numel() and (idx.min() < 0 or (d < 63 and idx.max() >= 2**d)):
        raise ValueError(f"indices must lie in [0, 2^{d}) for d={d}")
    return ((idx.unsqueeze(-1) // _weights(d, idx.device)) % 2).to(torch.uint8)


def indices_to_codes(indices: torch.Tensor, d: int, *, scale: float | None = None) -> torch.Tensor:
    """Indices ``(...)`` -> float32 codes ``(..., d)`` = ``(2 b - 1) * scale`` (scale defaults to 1/sqrt(d))."""
    s = 1.0 / math.sqrt(d) if scale is None else float(scale)
    return (indices_to_bits(indices, d).to(torch.float32) * 2.0 - 1.0) * s


def tokens_last(x_BdHW: torch.Tensor) -> torch.Tensor:
    """``(B, d, h, w)`` -> ``(B h w, d)`` token vectors (row-major tokens)."""
    return x_BdHW.permute(0, 2, 3, 1).reshape(-1, x_BdHW.shape[1])


def bit_probabilities(x_Nd: torch.Tensor, inv_temperature: float, scale: float) -> torch.Tensor:
    """``P(bit_j = 1 | x)`` under the soft assignment ``∝ exp(-tau ||c - x||^2)``: ``sigmoid(4 tau s x_j)``."""
    return torch.sigmoid(4.0 * inv_temperature * scale * x_Nd)


def _binary_entropy_from_logit(a: torch.Tensor) -> torch.Tensor:
    # h(sigmoid(a)) computed from the logit: stable for large |a|
    p = torch.sigmoid(a)
    return -(p * F.logsigmoid(a) + (1 - p) * F.logsigmoid(-a))


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))


def factorized_entropy(x_Nd: torch.Tensor, inv_temperature: float, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H_ps, H_cb_bound)``: exact per-sample entropy and the factorised codebook-entropy upper bound (nats).

    O(N d) time and O(d) state beyond the logits; runs at d = 64 (where 2^d codes could never be enumerated).
    """
    if x_Nd.ndim != 2:
        raise ValueError(f"expected token vectors (N, d), got {tuple(x_Nd.shape)}; see tokens_last()")
    logits = 4.0 * inv_temperature * scale * x_Nd.to(torch.promote_types(x_Nd.dtype, torch.float32))
    per_sample = _binary_entropy_from_logit(logits).sum(-1).mean()
    mean_p = torch.sigmoid(logits).mean(0)
    codebook = _binary_entropy(mean_p).sum()
    return per_sample, codebook


def exact_entropy(x_Nd: torch.Tensor, inv_temperature: float, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H_ps, H_cb)`` by enumerating all 2^d codes (the LFQ reference computation); d <= 20, O(N 2^d) memory."""
    if x_Nd.ndim != 2:
        raise ValueError(f"expected token vectors (N, d), got {tuple(x_Nd.shape)}")
    d = x_Nd.shape[1]
    if d > _EXACT_MAX_BITS:
        raise ValueError(
            f"exact entropy enumerates 2^d codes; d={d} is too large (max {_EXACT_MAX_BITS}), use factorized_entropy"
        )
    codes = indices_to_codes(torch.arange(2**d, device=x_Nd.device), d, scale=scale).to(x_Nd.dtype)  # (2^d, d)
    sq_dist = (x_Nd.unsqueeze(1) - codes.unsqueeze(0)).pow(2).sum(-1)  # (N, 2^d)
    log_q = torch.log_softmax(-inv_temperature * sq_dist, dim=-1)
    q = log_q.exp()
    per_sample = -(q * log_q).sum(-1).mean()
    mean_q = q.mean(0)
    codebook = -torch.special.xlogy(mean_q, mean_q).sum()
    return per_sample, codebook


def entropy_penalty(
    x_Nd: torch.Tensor,
    inv_temperature: float,
    scale: float,
    *,
    sample_weight: float = 1.0,
    codebook_weight: float = 1.0,
    exact: bool = False,
) -> torch.Tensor:
    """``sample_weight * H_ps - codebook_weight * H_cb``: low per-token uncertainty, high code usage (negative is normal).

    Factorised (O(d)) by default; ``exact=True`` uses the 2^d enumeration (small d only).
    """
    per_sample, codebook = (exact_entropy if exact else factorized_entropy)(x_Nd, inv_temperature, scale)
    return sample_weight * per_sample - codebook_weight * codebook


def commitment_loss(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``mean((x - sg(q))^2)`` over all elements: pulls the (normalised) features towards their codes."""
    return F.mse_loss(x.float(), q.detach().float())


@dataclass(kw_only=True)
class QuantizerOutput:
    """Result of a quantiser on a ``(B, d, h, w)`` map.

    Attributes:
        codes: quantised codes with straight-through gradients, ``(B, d, h, w)`` float32.
        bits: uint8 ``(B, h, w, d)``.
        commitment: :func:`commitment_loss` of the quantiser input against the codes.
        per_sample_entropy, codebook_entropy: :func:`factorized_entropy` terms (nats).
    """

    codes: torch.Tensor
    bits: torch.Tensor
    commitment: torch.Tensor
    per_sample_entropy: torch.Tensor
    codebook_entropy: torch.Tensor

    @property
    def entropy_penalty(self) -> torch.Tensor:
        return self.per_sample_entropy - self.codebook_entropy


class _BitQuantizer(nn.Module):
    spherical: bool = True

    def __init__(self, codebook_dim: int, *, inv_temperature: float = 100.0) -> None:
        super().__init__()
        if codebook_dim < 1:
            raise ValueError(f"codebook_dim must be >= 1, got {codebook_dim}")
        if inv_temperature <= 0:
            raise ValueError(f"inv_temperature must be > 0, got {inv_temperature}")
        self.codebook_dim = codebook_dim
        self.inv_temperature = float(inv_temperature)

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.codebook_dim) if self.spherical else 1.0

    def forward(self, x_BdHW: torch.Tensor) -> QuantizerOutput:
        if x_BdHW.ndim != 4 or x_BdHW.shape[1] != self.codebook_dim:
            raise ValueError(f"expected (B, {self.codebook_dim}, h, w), got {tuple(x_BdHW.shape)}")
        x = x_BdHW.float()  # the quantiser always runs in float32
        if self.spherical:
            x = F.normalize(x, dim=1, eps=1e-12)
        q = torch.where(x > 0, self.scale, -self.scale)
        codes = x + (q - x).detach()
        per_sample, codebook = factorized_entropy(tokens_last(x), self.inv_temperature, self.scale)
        return QuantizerOutput(
            codes=codes,
            bits=(q > 0).permute(0, 2, 3, 1).to(torch.uint8),
            commitment=commitment_loss(x, q),
            per_sample_entropy=per_sample,
            codebook_entropy=codebook,
        )

    def extra_repr(self) -> str:
        return f"codebook_dim={self.codebook_dim}, inv_temperature={self.inv_temperature}"


class BSQ(_BitQuantizer):
    """Binary spherical quantiser: ``q = sign(x / ||x||) / sqrt(d)`` per token (the released tokenizers)."""

    spherical = True


class LFQ(_BitQuantizer):
    """Lookup-free quantiser: ``q = sign(x)`` per channel (codes +-1)."""

    spherical = False
