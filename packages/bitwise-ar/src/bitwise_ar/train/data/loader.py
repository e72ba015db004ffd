"""Aspect-ratio-bucketed, resumable batches of images in [-1, 1] with their captions.

Each epoch is planned up front from the record table: records are grouped by their nearest aspect-ratio template
(the official rule, :func:`bsq_tokenizer.schedules.nearest_template`), shuffled within the group, cut into batches,
and the batches are shuffled, so templates are drawn in proportion to how many batches they fill. A position is
``(epoch, batch)``; the plan is a pure function of ``(seed, epoch)`` so a resumed run continues exactly. Images are
decoded lazily, batch by batch (LANCZOS resize to cover the target, centre crop, scale to [-1, 1]); images that are
missing or fail to decode are skipped and counted in :attr:`BucketedLoader.stats`.
"""

from __future__ import annotations

import io
import logging
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from bsq_tokenizer.schedules import get_image_size, nearest_template

from bitwise_ar.train.data.records import Record, RecordTable

logger = logging.getLogger(__name__)


def _rank_slice(chunk: list[int], rank: int, world_size: int) -> list[int]:
    per_rank = len(chunk) // world_size
    return chunk[rank * per_rank : (rank + 1) * per_rank]


def target_size(template: float, *, pn: str | None = "0.06M", image_size: int | None = None, stride: int = 16) -> tuple[int, int]:
    """Pixel size (H, W) of a template: the official size for ``pn``, or, with ``image_size``, the official 0.06M
    size scaled so that the 1:1 template is ``image_size`` square (rounded to multiples of ``stride``)."""
    if image_size is None:
        if pn is None:
            raise ValueError("give either pn (e.g. '0.06M') or image_size")
        return get_image_size(template, pn)
    if image_size % stride:
        raise ValueError(f"image_size {image_size} must be a multiple of the tokenizer stride {stride}")
    h, w = get_image_size(template, "0.06M")
    scale = image_size / 256

    def snap(v: float) -> int:
        return max(stride, round(v * scale / stride) * stride)

    return snap(h), snap(w)


def load_image(data: bytes, size: tuple[int, int]) -> torch.Tensor:
    """Decode, LANCZOS-resize to cover ``size`` = (H, W) keeping aspect, centre-crop, return (3, H, W) in [-1, 1]."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        th, tw = size
        scale = max(th / im.height, tw / im.width)
        rh, rw = max(th, math.ceil(im.height * scale - 1e-6)), max(tw, math.ceil(im.width * scale - 1e-6))
        im = im.resize((rw, rh), Image.Resampling.LANCZOS)
        top, left = (rh - th) // 2, (rw - tw) // 2
        im = im.crop((left, top, left + tw, top + th))
        array = np.asarray(im, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0)


def choose_caption(record: Record, rng: random.Random, *, short_caption_prob: float = 0.0) -> str:
    """The official dynamic-length prompt rule: with ``short_caption_prob`` the short caption (``text`` or the first
    1-2 sentences), else a random prefix of the long caption that is longer than the short one; text after ``--``
    is dropped."""
    caption = record.long_caption.split("--")[0].strip()
    if short_caption_prob <= 0.0:
        return caption
    sentences = [s.strip() for s in caption.split(".") if s.strip()]
    if not sentences:
        return caption
    n_short = 1 if len(sentences[0].split()) >= 15 else 2
    if rng.random() < short_caption_prob:
        return record.short_caption or ". ".join(sentences[:n_short]) + "."
    if len(sentences) <= n_short:
        return caption
    n = rng.randint(n_short + 1, len(sentences))
    return ". ".join(sentences[:n]) + "."


@dataclass(frozen=True, kw_only=True)
class Batch:
    """One batch: images (B, 3, H, W) in [-1, 1], captions, the template, and the loader position after it."""

    images_B3HW: torch.Tensor
    captions: list[str]
    template: float
    indices: list[int]
    position: dict
    keys: list[int] = field(default_factory=list)
    """Each sample's place in the global data stream (the same on any number of workers)."""


class BucketedLoader:
    """Iterate over planned, template-homogeneous batches; ``state_dict()`` / ``load_state_dict()`` resume exactly.

    Args:
        table: the indexed records.
        batch_size: images per batch per rank (the global batch is ``batch_size x world_size``).
        pn / image_size / stride: target pixel size of each template (see :func:`target_size`).
        seed: seeds the plan and caption choices.
        rank / world_size: the epoch is planned in global batches of ``batch_size x world_size`` images; rank ``r``
            takes slice ``r`` of each, so the plan (and a resume position) does not depend on how many workers share
            the global batch.
        drop_last: drop incomplete batches (keeps shapes static).
        short_caption_prob: see :func:`choose_caption`.
        max_epochs: stop after this many epochs (``None``: forever).
    """

    def __init__(
        self,
        table: RecordTable,
        *,
        batch_size: int,
        pn: str | None = "0.06M",
        image_size: int | None = None,
        stride: int = 16,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        short_caption_prob: float = 0.0,
        max_epochs: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        if not table.records:
            raise ValueError("the record table is empty: nothing to train on")
        self.table = table
        self.batch_size = batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.drop_last, self.short_caption_prob, self.max_epochs = drop_last, short_caption_prob, max_epochs
        self.templates = [nearest_template(r.h_div_w) for r in table.records]
        self.sizes = {t: target_size(t, pn=pn, image_size=image_size, stride=stride) for t in set(self.templates)}
        self.epoch, self.batch = 0, 0
        self.stats: Counter = Counter()
        if not self.plan(0):
            raise ValueError(
                f"no complete batch of {batch_size} x {world_size} ranks in {len(table)} records; lower batch_size"
            )

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def plan(self, epoch: int) -> list[list[int]]:
        """This rank's batches (record indices) of ``epoch``: its slice of each global batch."""
        rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
        groups: dict[float, list[int]] = {}
        for index, template in enumerate(self.templates):
            groups.setdefault(template, []).append(index)
        batches: list[list[int]] = []
        for template in sorted(groups):
            members = [groups[template][i] for i in rng.permutation(len(groups[template]))]
            for start in range(0, len(members), self.global_batch):
                chunk = members[start : start + self.global_batch]
                if len(chunk) == self.global_batch or (not self.drop_last and len(chunk) >= self.world_size):
                    batches.append(chunk)
        batches = [batches[i] for i in rng.permutation(len(batches))]
        return [_rank_slice(chunk, self.rank, self.world_size) for chunk in batches]

    def state_dict(self) -> dict:
        """Position of the next batch (plus the seed, to refuse resuming a different plan)."""
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a position saved by :meth:`state_dict` (on any number of workers with the same global
        batch)."""
        saved_global = state.get("global_batch", self.batch_size * state.get("world_size", self.world_size))
        if state.get("seed") != self.seed or saved_global != self.global_batch:
            raise ValueError(
                f"cannot resume data position saved with seed={state.get('seed')}, global batch {saved_global} "
                f"into a loader with seed={self.seed}, global batch {self.global_batch}"
            )
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    def _load(self, indices: list[int], template: float, epoch: int, number: int) -> Batch | None:
        images, captions, kept, keys = [], [], [], []
        for position, index in enumerate(indices):
            record = self.table.records[index]
            try:
                data = record.read_bytes()
            except OSError:
                self.stats["missing_image"] += 1
                logger.warning("image of record %d is missing, skipped", index)
                continue
            try:
                images.append(load_image(data, self.sizes[template]))
            except Exception:  # PIL raises many types on corrupt data
                self.stats["corrupt_image"] += 1
                logger.warning("image of record %d cannot be decoded, skipped", index)
                continue
            rng = random.Random(hash((self.seed, epoch, number, index)) & 0xFFFFFFFF)
            captions.append(choose_caption(record, rng, short_caption_prob=self.short_caption_prob))
            kept.append(index)
            keys.append((epoch * 2**24 + number) * self.global_batch + self.rank * self.batch_size + position)
        self.stats["loaded"] += len(kept)
        if not kept:
            return None
        return Batch(
            images_B3HW=torch.stack(images),
            captions=captions,
            template=template,
            indices=kept,
            keys=keys,
            position=self.state_dict(),
        )

    def __iter__(self) -> Iterator[Batch]:
        cached: tuple[int, list[list[int]]] | None = None
        while self.max_epochs is None or self.epoch < self.max_epochs:
            epoch, number = self.epoch, self.batch
            if cached is None or cached[0] != epoch:
                cached = (epoch, self.plan(epoch))
            plan = cached[1]
            if number >= len(plan):
                self.epoch, self.batch = epoch + 1, 0
                continue
            # advance first: the position stored with a batch is where to continue after it
            self.epoch, self.batch = (epoch + 1, 0) if number + 1 >= len(plan) else (epoch, number + 1)
            indices = plan[number]
            batch = self._load(indices, self.templates[indices[0]], epoch, number)
            if batch is not None:
                yield batch
