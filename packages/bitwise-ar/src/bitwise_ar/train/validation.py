"""Validation loss of a bitwise autoregressive model on held-out data, per scale: the one implementation, used by the
trainer (``[val]``, logged at training steps) and by ``infinity-eval val-loss`` (a saved pipeline).

:class:`ValLossAccumulator` sums, per scale, the per-token loss of :func:`bitwise_ar.train.loss.per_token_stats`
(in float64), bit accuracy and token accuracy; sums add across batches and, with :meth:`ValLossAccumulator.all_reduce_`,
across data-parallel ranks. Reported: ``val_loss/bit_ce`` (uniform mean over tokens, eval.sh's
``reweight_loss_by_scale=0``), ``val_loss/bit_ce_reweighted`` (per-image ``sum_t w_t loss_t`` with the training
weights of :func:`bitwise_ar.train.loss.token_weights`, the script's default), accuracies, and per-scale
``val_loss/scale_XX`` (loss) and ``val_loss/acc_bit_scale_XX`` (no key is a prefix directory of another: MLflow's file
store keeps each key as a path). :func:`validation_loss` runs a model over batches: tokenizer features, optional seeded Bitwise
Self-Correction flips (``bsc_max_flip`` > 0; 0 = teacher forcing), the teacher-forced forward without text dropout.
:func:`encode_batch` is its first half (the frozen tokenizer and text encoder), so a caller that scores the same
held-out batches again and again (the trainer) encodes them once and passes the :class:`EncodedBatch` items.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from bsq_tokenizer.multiscale import flip_and_requantize, sample_flip_probs
from infinity_run.distributed import rank_and_world

from bitwise_ar.train.loss import per_token_stats, token_weights

Batch = tuple[torch.Tensor, Sequence[str]]


@dataclass(frozen=True)
class EncodedBatch:
    """A held-out batch after the frozen encoders: tokenizer features ``(B, d, h, w)`` (float32), the scale
    schedule they are quantised on, and the encoded captions."""

    features_BdHW: torch.Tensor
    schedule: list[tuple[int, int]]
    text: Any

    def to(self, device: torch.device | str) -> EncodedBatch:
        return EncodedBatch(self.features_BdHW.to(device), self.schedule, self.text.to(device))


@torch.no_grad()
def encode_batch(
    tokenizer: Any, text_encoder: Any, images_B3HW: torch.Tensor, captions: Sequence[str], device: torch.device | str
) -> EncodedBatch:
    """Images in [-1, 1] and their captions through the tokenizer's encoder and the text encoder."""
    features = tokenizer.encode_features(images_B3HW.to(device)).float()
    schedule = tokenizer.default_schedule(*features.shape[-2:])
    return EncodedBatch(features, schedule, text_encoder.encode(list(captions)).to(device))


class ValLossAccumulator:
    """Float64 sums per scale index, mergeable across batches (and ranks, by adding the sums)."""

    def __init__(self) -> None:
        self.loss: dict[int, float] = {}
        self.acc_bit: dict[int, float] = {}
        self.acc_token: dict[int, float] = {}
        self.tokens: dict[int, float] = {}
        self.reweighted_sum = 0.0
        self.images = 0.0

    def update(self, logits_BLV: torch.Tensor, labels_BLd: torch.Tensor, schedule: Sequence[tuple[int, int]]) -> None:
        """Add one batch whose sequence follows ``schedule``."""
        sizes = [h * w for h, w in schedule]
        if sum(sizes) != labels_BLd.shape[1]:
            raise ValueError(f"schedule {list(schedule)} has {sum(sizes)} tokens, labels have {labels_BLd.shape[1]}")
        loss_BL, correct_BLd = per_token_stats(logits_BLV, labels_BLd, dtype=torch.float64)
        bit_BL, token_BL = correct_BLd.double().mean(-1), correct_BLd.all(-1).double()
        start = 0
        for k, n in enumerate(sizes):
            sl = slice(start, start + n)
            self.loss[k] = self.loss.get(k, 0.0) + float(loss_BL[:, sl].sum())
            self.acc_bit[k] = self.acc_bit.get(k, 0.0) + float(bit_BL[:, sl].sum())
            self.acc_token[k] = self.acc_token.get(k, 0.0) + float(token_BL[:, sl].sum())
            self.tokens[k] = self.tokens.get(k, 0.0) + loss_BL.shape[0] * n
            start += n
        weights_L = token_weights(schedule, dtype=torch.float64).to(loss_BL.device)
        self.reweighted_sum += float((loss_BL * weights_L).sum())
        self.images += loss_BL.shape[0]

    def all_reduce_(self, device: torch.device | str = "cpu") -> ValLossAccumulator:
        """Sum every rank's sums (collective; every rank must have seen the same schedules); a no-op in one process."""
        _, world = rank_and_world()
        if world == 1:
            return self
        scales = sorted(self.tokens)
        values = [self.reweighted_sum, self.images]
        for k in scales:
            values += [self.loss[k], self.acc_bit[k], self.acc_token[k], self.tokens[k]]
        summed = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(summed)
        out = summed.tolist()
        self.reweighted_sum, self.images = out[0], out[1]
        for i, k in enumerate(scales):
            self.loss[k], self.acc_bit[k], self.acc_token[k], self.tokens[k] = out[2 + 4 * i : 6 + 4 * i]
        return self

    def metrics(self, prefix: str = "val_loss") -> dict[str, float]:
        """Overall and per-scale metrics."""
        if not self.images:
            raise ValueError("no validation batches accumulated")
        total = sum(self.tokens.values())
        out = {
            f"{prefix}/bit_ce": sum(self.loss.values()) / total,
            f"{prefix}/bit_ce_reweighted": self.reweighted_sum / self.images,
            f"{prefix}/acc_bit": sum(self.acc_bit.values()) / total,
            f"{prefix}/acc_token": sum(self.acc_token.values()) / total,
            f"{prefix}/num_images": float(self.images),
        }
        for k in sorted(self.tokens):
            out[f"{prefix}/scale_{k:02d}"] = self.loss[k] / self.tokens[k]
            out[f"{prefix}/acc_bit_scale_{k:02d}"] = self.acc_bit[k] / self.tokens[k]
        return out


@torch.no_grad()
def validation_loss(
    transformer: Callable[..., torch.Tensor],
    tokenizer: Any,
    text_encoder: Any,
    batches: Iterable[Batch | EncodedBatch],
    *,
    device: torch.device | str = "cpu",
    bsc_max_flip: float = 0.0,
    seed: int = 0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> ValLossAccumulator:
    """Accumulate the validation loss of ``transformer`` over ``batches`` of ``(images_B3HW in [-1, 1], captions)``
    or of :class:`EncodedBatch` (already through the encoders; the same result).

    ``tokenizer`` gives the features and scale schedule, ``text_encoder.encode(captions)`` the text; the forward is
    teacher-forced and has no text dropout; the caller puts the model in eval mode. ``bsc_max_flip`` > 0 applies
    Bitwise Self-Correction as in training (Infinity's eval.sh uses 0.2) with flip rates and flips drawn from one
    ``torch.Generator`` seeded with ``seed``, so the result is reproducible. ``autocast`` wraps the forward (the
    trainer's precision); the logits are scored in float64. Sums are this process's: call
    :meth:`ValLossAccumulator.all_reduce_` under data parallelism.
    """
    generator = torch.Generator().manual_seed(seed)
    acc = ValLossAccumulator()
    for batch in batches:
        if isinstance(batch, EncodedBatch):
            encoded = batch.to(device)
        else:
            encoded = encode_batch(tokenizer, text_encoder, *batch, device)
        schedule = encoded.schedule
        probs = sample_flip_probs(len(schedule), bsc_max_flip, generator) if bsc_max_flip > 0 else [0.0] * len(schedule)
        inputs, labels = flip_and_requantize(encoded.features_BdHW, schedule, probs, generator)
        labels_BLd = torch.cat([b.flatten(1, 2) for b in labels], dim=1)
        with autocast():
            logits = transformer(encoded.text, inputs, schedule)
        acc.update(logits.float(), labels_BLd, schedule)
    return acc
