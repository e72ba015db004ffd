"""Batch sources for the trainer: generated ShapesT2I, or indexed jsonl / webdataset data via the bucketed loader.

A source yields ``(images_B3HW in [-1, 1], captions)`` forever and has ``state_dict`` / ``load_state_dict`` for an
exact resume position.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from bitwise_ar.train.config import DataSection


class ShapesSource:
    """Endless ShapesT2I batches; batch ``k`` of rank ``r`` holds samples ``[(k W + r) B, (k W + r + 1) B)``."""

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
        from bitwise_ar.shapes import RenderConfig, ShapesConfig, ShapesT2I

        render = RenderConfig(image_size=image_size, grid=grid, ordered=ordered, rows=rows)
        self.dataset = ShapesT2I(length=2**62, seed=seed, config=ShapesConfig(render=render))
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.image_size = (image_size, image_size)
        self.batch = 0

    def state_dict(self) -> dict:
        return {"kind": "shapes", "batch": self.batch, "seed": self.seed, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        if (
            state.get("kind") != "shapes"
            or state.get("seed") != self.seed
            or state.get("world_size") != self.world_size
        ):
            raise ValueError(
                f"cannot resume data position {state} with a shapes source of seed {self.seed}, {self.world_size} workers"
            )
        self.batch = int(state["batch"])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str]]]:
        from bitwise_ar.train.demo import image_to_tensor

        while True:
            first = (self.batch * self.world_size + self.rank) * self.batch_size
            samples = [self.dataset[first + j] for j in range(self.batch_size)]
            self.batch += 1
            yield torch.stack([image_to_tensor(s.image) for s in samples]), [s.caption for s in samples]


class LoaderSource:
    """Indexed records (official jsonl splits or webdataset shards) through :class:`BucketedLoader`."""

    def __init__(self, config: DataSection, *, rank: int, world_size: int, stride: int) -> None:
        from bitwise_ar.train.data import BucketedLoader, load_records

        table = load_records(config.source, format=config.format)
        self.loader = BucketedLoader(
            table,
            batch_size=config.batch_size,
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

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str]]]:
        for batch in self.loader:
            yield batch.images_B3HW, batch.captions


def build_source(config: DataSection, *, rank: int, world_size: int, stride: int) -> ShapesSource | LoaderSource:
    """``data.source = "shapes"`` -> :class:`ShapesSource`; else a path -> :class:`LoaderSource`."""
    if config.source == "shapes":
        return ShapesSource(
            batch_size=config.batch_size,
            seed=config.seed,
            image_size=config.image_size or 64,
            rank=rank,
            world_size=world_size,
            grid=config.shapes_grid,
            ordered=config.shapes_ordered,
            rows=config.shapes_rows,
        )
    return LoaderSource(config, rank=rank, world_size=world_size, stride=stride)
