"""Validation loss of a bitwise autoregressive model on a held-out split, per scale.

The core (:class:`ValLossAccumulator`) is model-agnostic: it takes teacher-forcing logits ``(B, L, 2d)`` (bitwise
IVC head, interleaved ``[b0_neg, b0_pos, ...]``) or ``(B, L, 2^d)`` (index head) and label bits ``(B, L, d)`` and
accumulates, per scale, the per-token loss (2-way cross-entropy averaged over the d bits), bit accuracy and token
accuracy. Reported: ``val_loss/bit_ce`` (uniform mean over tokens, eval.sh's ``reweight_loss_by_scale=0``),
``val_loss/bit_ce_reweighted`` (per-image Σ_t w_t·loss_t with w_k ∝ √(h_K w_K)/√(h_k w_k) normalised to 1, the
script's default), accuracies, and ``val_loss/scale_XX`` breakdowns. :func:`bitwise_ar_validation_loss` is the
adapter for ``bitwise-ar`` pipelines (encode with the tokenizer, optional seeded Bitwise Self-Correction flips,
teacher-forced forward in fp32).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bsq_tokenizer.quantizers import bits_to_indices, indices_to_bits
from tqdm.auto import tqdm

from infinity_eval.images import load_image

logger = logging.getLogger(__name__)


def scale_token_weights(schedule: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Area-reweighted per-token weights ``(L,)`` summing to 1: each token of scale k ∝ √(h_K w_K)/√(h_k w_k)."""
    sizes = [h * w for h, w in schedule]
    last = math.sqrt(sizes[-1])
    w = torch.cat([torch.full((n,), last / math.sqrt(n), dtype=torch.float64) for n in sizes])
    return w / w.sum()


def per_token_stats(logits_BLV: torch.Tensor, labels_BLd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token (loss, bit accuracy, token accuracy), each ``(B, L)`` float64."""
    B, L, d = labels_BLd.shape
    labels = labels_BLd.long()
    V = logits_BLV.shape[-1]
    if logits_BLV.shape[:2] != (B, L):
        raise ValueError(f"logits {tuple(logits_BLV.shape)} and labels {tuple(labels_BLd.shape)} disagree on (B, L)")
    if 2 * d == V:
        logits = logits_BLV.double().view(B, L, d, 2)
        loss = F.cross_entropy(logits.permute(0, 3, 1, 2), labels, reduction="none").mean(-1)
        pred = logits.argmax(-1)
    elif 2**d == V:
        loss = F.cross_entropy(logits_BLV.double().permute(0, 2, 1), bits_to_indices(labels), reduction="none")
        pred = indices_to_bits(logits_BLV.argmax(-1), d, check_range=False).long()
    else:
        raise ValueError(f"logits have {V} classes per token; expected 2d = {2 * d} or 2^d = {2**d}")
    correct = pred == labels
    return loss, correct.double().mean(-1), correct.all(-1).double()


class ValLossAccumulator:
    """Float64 sums per scale index, mergeable across batches (and workers, by adding the sums)."""

    def __init__(self) -> None:
        self.loss: dict[int, float] = {}
        self.acc_bit: dict[int, float] = {}
        self.acc_token: dict[int, float] = {}
        self.tokens: dict[int, int] = {}
        self.reweighted_sum = 0.0
        self.images = 0

    def update(self, logits_BLV: torch.Tensor, labels_BLd: torch.Tensor, schedule: Sequence[tuple[int, int]]) -> None:
        """Add one batch whose sequence follows ``schedule``."""
        sizes = [h * w for h, w in schedule]
        if sum(sizes) != labels_BLd.shape[1]:
            raise ValueError(f"schedule {list(schedule)} has {sum(sizes)} tokens, labels have {labels_BLd.shape[1]}")
        loss, bit, tok = per_token_stats(logits_BLV, labels_BLd)
        start = 0
        for k, n in enumerate(sizes):
            sl = slice(start, start + n)
            self.loss[k] = self.loss.get(k, 0.0) + float(loss[:, sl].sum())
            self.acc_bit[k] = self.acc_bit.get(k, 0.0) + float(bit[:, sl].sum())
            self.acc_token[k] = self.acc_token.get(k, 0.0) + float(tok[:, sl].sum())
            self.tokens[k] = self.tokens.get(k, 0) + loss.shape[0] * n
            start += n
        self.reweighted_sum += float((loss * scale_token_weights(schedule).to(loss.device)).sum())
        self.images += loss.shape[0]

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
            out[f"{prefix}/acc_bit/scale_{k:02d}"] = self.acc_bit[k] / self.tokens[k]
        return out


def read_split(jsonl: str | Path) -> list[tuple[Path, str]]:
    """(image path, caption) pairs of a training-format jsonl (``image_path`` + ``text`` or ``long_caption``).

    Relative image paths are resolved against the jsonl's folder and its parents (official splits live in
    ``<data>/splits/`` with paths relative to the data root's parent).
    """
    jsonl = Path(jsonl)
    if not jsonl.is_file():
        raise FileNotFoundError(f"validation split not found: {jsonl}")
    pairs = []
    for lineno, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        caption = row.get("text") or row.get("long_caption")
        if "image_path" not in row or not caption:
            raise ValueError(f"{jsonl}:{lineno}: needs 'image_path' and 'text' (or 'long_caption')")
        raw = Path(row["image_path"])
        candidates = [raw] if raw.is_absolute() else [base / raw for base in (jsonl.parent, *jsonl.parents)]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{jsonl}:{lineno}: image {row['image_path']} not found next to the split")
        pairs.append((path, caption))
    if not pairs:
        raise ValueError(f"{jsonl} holds no samples")
    return pairs


def image_to_tensor(path: Path, size_hw: tuple[int, int]) -> torch.Tensor:
    """Resize (short side, LANCZOS) and centre-crop to ``size_hw``; returns ``(3, H, W)`` in [-1, 1]."""
    from PIL import Image

    image = load_image(path)
    h, w = size_hw
    scale = max(h / image.height, w / image.width)
    resized = image.resize((max(w, round(image.width * scale)), max(h, round(image.height * scale))), Image.Resampling.LANCZOS)
    left, top = (resized.width - w) // 2, (resized.height - h) // 2
    arr = np.asarray(resized.crop((left, top, left + w, top + h)), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1)


def _batches(pairs: Sequence[tuple[Path, str]], batch_size: int) -> Iterator[Sequence[tuple[Path, str]]]:
    for start in range(0, len(pairs), batch_size):
        yield pairs[start : start + batch_size]


@torch.no_grad()
def bitwise_ar_validation_loss(
    model_dir: str | Path,
    split: str | Path,
    *,
    image_size: tuple[int, int],
    batch_size: int = 8,
    bsc_max_flip: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, float]:
    """Validation loss of a ``bitwise-ar`` pipeline folder on a held-out jsonl split (teacher forcing, fp32).

    ``bsc_max_flip`` > 0 applies Bitwise Self-Correction as in training (Infinity's eval.sh uses 0.2) with flip rates
    drawn from ``torch.Generator().manual_seed(seed)``, so results are reproducible.
    """
    try:
        from bitwise_ar.pipeline import InfinityPipeline
        from bsq_tokenizer.multiscale import flip_and_requantize, sample_flip_probs
    except ImportError as exc:  # pragma: no cover - needs the extra
        raise ImportError("validation loss needs bitwise-ar: pip install 'infinity-eval[generate]'") from exc
    pipe = InfinityPipeline.from_pretrained(model_dir, device=device)
    pairs = read_split(split)
    generator = torch.Generator().manual_seed(seed)
    acc = ValLossAccumulator()
    for batch in tqdm(list(_batches(pairs, batch_size)), desc="validation loss", disable=not progress):
        images = torch.stack([image_to_tensor(p, image_size) for p, _ in batch]).to(device)
        features = pipe.tokenizer.encode_features(images).float()
        schedule = pipe.tokenizer.default_schedule(*features.shape[-2:])
        probs = sample_flip_probs(len(schedule), bsc_max_flip, generator) if bsc_max_flip > 0 else [0.0] * len(schedule)
        inputs, labels = flip_and_requantize(features, schedule, probs, generator)
        labels_BLd = torch.cat([b.flatten(1, 2) for b in labels], dim=1)
        text = pipe.text_encoder.encode([c for _, c in batch])
        logits = pipe.transformer(text.to(device) if hasattr(text, "to") else text, inputs, schedule)
        acc.update(logits.float(), labels_BLd, schedule)
    return acc.metrics()
