"""Images for tokenizer training: a folder of images, or the official jsonl splits (their ``image_path`` entries).

Batches are square crops of ``image_size`` pixels in [-1, 1]: each image is resized so its short side is
``image_size`` (LANCZOS) and cropped at a place drawn from the sample's key, so a sample is the same picture on any
number of workers. The stream is endless: epoch ``e`` is a permutation of the files seeded by ``(seed, e)``, cut
into global batches of ``batch_size x world_size``; rank ``r`` takes slice ``r``. The position (global batches
done) resumes exactly, on any number of workers with the same global batch. Unreadable images are skipped with a
warning and counted.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def find_images(source: str | Path) -> list[Path]:
    """The images ``source`` names: a folder (searched recursively, sorted) or official split ``*.jsonl`` files
    (a file or a folder of them; ``image_path`` is resolved against the file's folder and its parents)."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"data.source {source} not found (a folder of images or official jsonl splits)")
    splits = [source] if source.suffix == ".jsonl" else sorted(source.glob("*.jsonl")) if source.is_dir() else []
    if splits:
        return _from_splits(splits)
    images = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise ValueError(f"data.source {source} holds no images ({', '.join(IMAGE_SUFFIXES)}) and no .jsonl splits")
    return images


def _from_splits(splits: list[Path]) -> list[Path]:
    images = []
    for split in splits:
        for number, line in enumerate(split.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                relative = json.loads(line)["image_path"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{split}:{number}: not a split record with an image_path") from None
            images.append(_resolve(split.parent, relative))
    return images


def _resolve(base: Path, relative: str) -> Path:
    for root in (base, *base.parents):
        if (root / relative).is_file():
            return root / relative
    return base / relative  # missing: skipped (and counted) when loaded


class ImageSource:
    """Endless batches ``(images_B3HW, keys)`` of this rank's share of each global batch (see the module doc)."""

    def __init__(
        self, source: str | Path, *, image_size: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.files = find_images(source)
        self.image_size, self.batch_size, self.seed = image_size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        if len(self.files) < self.global_batch:
            raise ValueError(
                f"{source} has {len(self.files)} images, fewer than one global batch of {self.global_batch}"
            )
        self.batch = 0
        self.stats: Counter = Counter()

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def state_dict(self) -> dict:
        return {"kind": "images", "batch": self.batch, "seed": self.seed, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") != self.seed or state.get("global_batch") != self.global_batch:
            raise ValueError(
                f"cannot resume data position {state} with seed {self.seed}, global batch {self.global_batch}"
            )
        self.batch = int(state["batch"])

    def _order(self, epoch: int) -> list[int]:
        return np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(len(self.files)).tolist()

    def _load(self, key: int, index: int) -> torch.Tensor | None:
        from PIL import Image

        path = self.files[index]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                scale = self.image_size / min(image.size)
                size = (max(self.image_size, round(image.width * scale)), max(self.image_size, round(image.height * scale)))
                image = image.resize(size, Image.Resampling.LANCZOS)
                rng = random.Random(key * 1_000_003 + self.seed)
                left = rng.randint(0, image.width - self.image_size)
                top = rng.randint(0, image.height - self.image_size)
                image = image.crop((left, top, left + self.image_size, top + self.image_size))
                array = np.asarray(image, dtype=np.float32)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            self.stats["unreadable"] += 1
            logger.warning("skipping unreadable image %s (%s)", path, err)
            return None
        return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[int]]]:
        per_epoch = len(self.files) // self.global_batch
        while True:
            epoch, number = divmod(self.batch, per_epoch)
            order = self._order(epoch)
            first = number * self.global_batch + self.rank * self.batch_size
            images, keys = [], []
            for offset in range(self.batch_size):
                key = self.batch * self.global_batch + self.rank * self.batch_size + offset
                image = self._load(key, order[first + offset])
                if image is not None:
                    images.append(image)
                    keys.append(key)
            self.batch += 1
            if images:
                self.stats["loaded"] += len(images)
                yield torch.stack(images), keys
