"""Validation loss of a ``bitwise-ar`` pipeline on held-out data, per scale.

The computation is :mod:`bitwise_ar.train.validation` (the one the trainer logs at training steps with ``[val]``), so
a checkpoint exported at step k scores here what its training run logged at step k on the same data. The held-out
data is either a jsonl file (``image_path`` + ``text``/``long_caption``; images resized and centre-cropped to
``image_size``) or a data source in the trainer's vocabulary (``[val]``/``[data]``: an official split folder or
webdataset shards, or a named source such as ``synthetic`` or ``shapes`` with its seed and options). Reported:
``val_loss/bit_ce`` (uniform token mean), ``val_loss/bit_ce_reweighted``, accuracies and ``val_loss/scale_XX``.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from infinity_eval.images import load_image

logger = logging.getLogger(__name__)


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


def held_out_batches(
    split: str | Path, *, stride: int, image_size: tuple[int, int] | None, batch_size: int, batches: int | None,
    data_seed: int, options: Mapping[str, Any] | None, format: str,
) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """The ``(images, captions)`` batches of ``split``, read as they are used: a jsonl file, or a trainer data source
    (see the module). Bad arguments raise here, before any batch is read."""
    check_held_out(split, image_size=image_size, batches=batches)
    if str(split).endswith(".jsonl"):
        pairs = read_split(split)
        chunks = itertools.islice(_batches(pairs, batch_size), batches)
        return ((torch.stack([image_to_tensor(p, image_size) for p, _ in c]), [t for _, t in c]) for c in chunks)
    from bitwise_ar.train.config import ValSection
    from bitwise_ar.train.sources import build_source

    val = ValSection(source=str(split), format=format, options=dict(options or {}), seed=data_seed,
                     batch_size=batch_size, batches=batches, image_size=image_size[0] if image_size else 0)
    source = build_source(val, rank=0, world_size=1, batch_size=batch_size, stride=stride, section="val")
    return ((images, captions) for images, captions, _ in itertools.islice(source, batches))


def check_held_out(split: str | Path, *, image_size: tuple[int, int] | None, batches: int | None) -> None:
    """The argument rules of :func:`held_out_batches` (checked before a model is loaded)."""
    if str(split).endswith(".jsonl"):
        if image_size is None:
            raise ValueError(f"a jsonl split ({split}) needs image_size (H, W)")
        return
    if batches is None:
        raise ValueError(f"a data source ({split}) needs the number of batches to read (--batches)")
    if image_size is not None and image_size[0] != image_size[1]:
        raise ValueError(f"a data source takes a square image size (val.image_size), got {image_size}")


@torch.no_grad()
def bitwise_ar_validation_loss(
    model_dir: str | Path,
    split: str | Path,
    *,
    image_size: tuple[int, int] | None = None,
    batch_size: int = 8,
    batches: int | None = None,
    data_seed: int = 1,
    options: Mapping[str, Any] | None = None,
    format: str = "auto",
    bsc_max_flip: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, float]:
    """Validation loss of a ``bitwise-ar`` pipeline folder on held-out data (teacher forcing, fp32).

    ``split``: a jsonl file (needs ``image_size``; ``batches`` = None reads all of it) or a trainer data source with
    ``data_seed``, ``options``, ``format`` and ``image_size`` (square; 0 / None = the source's default) as in
    ``[val]``, of which the first ``batches`` batches of ``batch_size`` are read. ``bsc_max_flip`` > 0 applies
    Bitwise Self-Correction as in training (Infinity's eval.sh uses 0.2) with flips drawn from
    ``torch.Generator().manual_seed(seed)``, so results are reproducible.
    """
    try:
        from bitwise_ar.pipeline import InfinityPipeline
        from bitwise_ar.train.validation import validation_loss
    except ImportError as exc:  # pragma: no cover - needs the extra
        raise ImportError("validation loss needs bitwise-ar: pip install 'infinity-eval[generate]'") from exc
    check_held_out(split, image_size=image_size, batches=batches)
    pipe = InfinityPipeline.from_pretrained(model_dir, device=device)
    held_out = held_out_batches(split, stride=pipe.tokenizer.config.pad_multiple, image_size=image_size,
                                batch_size=batch_size, batches=batches, data_seed=data_seed, options=options, format=format)
    pipe.transformer.eval()
    acc = validation_loss(pipe.transformer, pipe.tokenizer, pipe.text_encoder,
                          tqdm(held_out, desc="validation loss", total=batches, disable=not progress),
                          device=device, bsc_max_flip=bsc_max_flip, seed=seed)  # fmt: skip
    return acc.metrics()
