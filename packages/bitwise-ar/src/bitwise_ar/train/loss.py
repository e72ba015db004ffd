"""Bitwise cross-entropy with scale-reweighted token weights, and per-scale accuracy metrics (reference §5.1).

Token weights: every token of scale k gets ``w_k ∝ sqrt(h_K w_K) / sqrt(h_k w_k)``, normalised so that the weights
of the whole sequence sum to 1 (``reweight_loss_by_scale``, which crashes in the public official code). A scale's
total weight is then ∝ sqrt(h_k w_k): coarse scales count more per token than with the plain mean, less in total.
With ``reweight=False`` every token weighs 1/L (the official default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from bsq_tokenizer.quantizers import bits_to_indices, indices_to_bits


def token_weights(
    schedule: Sequence[tuple[int, int]], *, reweight: bool = True, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Per-token weights (L,) summing to 1."""
    sizes = [h * w for h, w in schedule]
    if not reweight:
        total = sum(sizes)
        return torch.full((total,), 1.0 / total, dtype=dtype)
    last = math.sqrt(sizes[-1])
    w = torch.cat([torch.full((n,), last / math.sqrt(n), dtype=dtype) for n in sizes])
    return w / w.sum()


def per_token_stats(
    logits_BLV: torch.Tensor, labels_BLd: torch.Tensor, *, label_smoothing: float = 0.0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss ``(B, L)`` in ``dtype`` (the mean over the d bits of the 2-way cross-entropy, or the 2^d-way
    cross-entropy of an index head) and the per-bit correctness ``(B, L, d)`` of the argmax prediction.

    ``logits_BLV``: (B, L, 2d) interleaved bit logits ``[b0_neg, b0_pos, b1_neg, ...]`` (IVC head) or (B, L, 2^d)
    (conventional index head). ``labels_BLd``: the label bits of all scales, (B, L, d) in {0, 1}. The training loss
    (:func:`bitwise_loss`) and the validation loss (:mod:`bitwise_ar.train.validation`) are both built on it.
    """
    B, L, d = labels_BLd.shape
    if logits_BLV.shape[:2] != (B, L):
        raise ValueError(f"logits {tuple(logits_BLV.shape)} and labels {tuple(labels_BLd.shape)} disagree on (B, L)")
    labels = labels_BLd.long()
    V = logits_BLV.shape[-1]
    if 2 * d == V:
        logits = logits_BLV.to(dtype).view(B, L, d, 2)
        # class dimension last and rows contiguous: the fast cross-entropy layout (no permuted copy)
        ce_BLd = F.cross_entropy(
            logits.reshape(-1, 2), labels.reshape(-1), reduction="none", label_smoothing=label_smoothing
        ).view(B, L, d)
        loss_BL = ce_BLd.mean(-1)
        pred_BLd = logits.argmax(-1)
    elif 2**d == V:
        target = bits_to_indices(labels)
        loss_BL = F.cross_entropy(
            logits_BLV.to(dtype).reshape(B * L, V), target.reshape(-1), reduction="none", label_smoothing=label_smoothing
        ).view(B, L)
        pred_BLd = indices_to_bits(logits_BLV.argmax(-1), d, check_range=False)
    else:
        raise ValueError(f"logits have {V} classes per token; expected 2d = {2 * d} (bits head) or 2^d = {2**d} (index head)")
    return loss_BL, pred_BLd == labels


def bitwise_loss(
    logits_BLV: torch.Tensor,
    labels_BLd: torch.Tensor,
    schedule: Sequence[tuple[int, int]],
    *,
    reweight: bool = True,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Training loss and metrics.

    ``logits_BLV`` and ``labels_BLd`` as in :func:`per_token_stats`. Returns the weighted loss (mean over batch of
    ``sum_t w_t * loss_t``, ``loss_t`` = mean over bits of the CE) and float metrics: ``loss``, ``acc_bit``,
    ``acc_token`` overall and per scale (``*_s00`` ...), ``*_last``.
    """
    B, L = labels_BLd.shape[:2]
    sizes = [h * w for h, w in schedule]
    if sum(sizes) != L or logits_BLV.shape[:2] != (B, L):
        raise ValueError(f"logits {tuple(logits_BLV.shape)} / labels {tuple(labels_BLd.shape)} do not fit schedule {list(schedule)}")
    loss_BL, correct_BLd = per_token_stats(logits_BLV, labels_BLd, label_smoothing=label_smoothing)
    weights_L = token_weights(schedule, reweight=reweight).to(loss_BL.device)
    loss = (loss_BL * weights_L).sum(-1).mean()
    with torch.no_grad():
        bit_acc_BL = correct_BLd.float().mean(-1)
        token_acc_BL = correct_BLd.all(-1).float()
        metrics = {
            "loss": float(loss.detach()),
            "loss_mean": float(loss_BL.mean()),
            "acc_bit": float(bit_acc_BL.mean()),
            "acc_token": float(token_acc_BL.mean()),
        }
        start = 0
        for k, n in enumerate(sizes):
            sl = slice(start, start + n)
            metrics[f"loss_s{k:02d}"] = float(loss_BL[:, sl].mean())
            metrics[f"acc_bit_s{k:02d}"] = float(bit_acc_BL[:, sl].mean())
            metrics[f"acc_token_s{k:02d}"] = float(token_acc_BL[:, sl].mean())
            start += n
        last = len(sizes) - 1
        metrics["loss_last"] = metrics[f"loss_s{last:02d}"]
        metrics["acc_bit_last"] = metrics[f"acc_bit_s{last:02d}"]
    return loss, metrics
