"""Batch sources for the trainer: generated ShapesT2I, or indexed jsonl / webdataset data via the bucketed loader.

A source yields ``(images_B3HW in [-1, 1], captions, keys)`` forever, where ``keys`` identify each sample's place in
the global data stream (the same sample has the same key on any number of workers; the trainer seeds each sample's
random draws from it). The global batch ``data.batch_size`` is split evenly over the workers; the resume position
(``state_dict``) counts global batches, so a run resumes on another number of workers exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from bitwise_ar.shapes import RenderConfig, ShapesConfig, ShapesT2I
from bitwise_ar.train.config import DataSection
from bitwise_ar.train.data import BucketedLoader, load_records


def image_to_tensor(image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1).div(127.5).sub(1.0)


class ShapesSource:
    """Endless ShapesT2I batches; global batch ``k`` holds samples ``[k G, (k + 1) G)`` (G = ``batch_size x
    world_size``), of which rank ``r`` takes ``[k G + r B, k G + (r + 1) B)``."""

    def __init__(
        self,
        *,
        batch_size: int,
        seed: int,
        image_size: int,
        rank: int = 0,
        world_size: int = 1,
        grid: int = 0,
        ordered: bool = False,
        rows: bool = False,
    ) -> None:
        render = RenderConfig(image_size=image_size, grid=grid, ordered=ordered, rows=rows)
        self.dataset = ShapesT2I(length=2**62, seed=seed, config=ShapesConfig(render=render))
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.image_size = (image_size, image_size)
        self.batch = 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def state_dict(self) -> dict:
        return {"kind": "shapes", "batch": self.batch, "seed": self.seed, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict) -> None:
        # checkpoints written before "global_batch" was recorded hold "world_size" and a per-worker batch
        saved_global = state.get("global_batch", self.batch_size * state.get("world_size", self.world_size))
        if state.get("kind") != "shapes" or state.get("seed") != self.seed or saved_global != self.global_batch:
            raise ValueError(
                f"cannot resume data position {state} with a shapes source of seed {self.seed}, global batch "
                f"{self.global_batch}"
            )
        self.batch = int(state["batch"])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str], list[int]]]:
        while True:
            first = self.batch * self.global_batch + self.rank * self.batch_size
            keys = list(range(first, first + self.batch_size))
            samples = [self.dataset[k] for k in keys]
            self.batch += 1
            yield torch.stack([image_to_tensor(s.image) for s in samples]), [s.caption for s in samples], keys


class LoaderSource:
    """Indexed records (official jsonl splits or webdataset shards) through :class:`BucketedLoader`."""

    def __init__(self, config: DataSection, *, rank: int, world_size: int, batch_size: int, stride: int) -> None:
        table = load_records(config.source, format=config.format)
        self.loader = BucketedLoader(
            table,
            batch_size=batch_size,
            pn=config.pn,
            image_size=config.image_size or None,
            stride=stride,
            seed=config.seed,
            rank=rank,
            world_size=world_size,
            short_caption_prob=config.short_caption_prob,
        )
        self.image_size = None

    def state_dict(self) -> dict:
        return {"kind": "loader", **self.loader.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "loader":
            raise ValueError(f"cannot resume data position {state} with an indexed-data source")
        self.loader.load_state_dict({k: v for k, v in state.items() if k != "kind"})

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str], list[int]]]:
        for batch in self.loader:
            yield batch.images_B3HW, batch.captions, batch.keys


def build_source(
    config: DataSection, *, rank: int, world_size: int, batch_size: int, stride: int
) -> ShapesSource | LoaderSource:
    """``data.source = "shapes"`` -> :class:`ShapesSource`; else a path -> :class:`LoaderSource`; ``batch_size`` is
    this rank's share of the global ``data.batch_size``."""
    if config.source == "shapes":
        return ShapesSource(
            batch_size=batch_size,
            seed=config.seed,
            image_size=config.image_size or 64,
            rank=rank,
            world_size=world_size,
            grid=config.shapes_grid,
            ordered=config.shapes_ordered,
            rows=config.shapes_rows,
        )
    return LoaderSource(config, rank=rank, world_size=world_size, batch_size=batch_size, stride=stride)
