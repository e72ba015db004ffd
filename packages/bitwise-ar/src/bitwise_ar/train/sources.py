"""Batch sources for the trainer: indexed jsonl / webdataset data through the bucketed loader, or a named source.

``data.source`` is a path (an official jsonl split folder or webdataset shards; ``data.format``) or the name of a data
source: ``synthetic`` (built in: seeded random images and captions, for tests and smoke runs) or a source that an
installed package registers under the entry-point group ``bitwise_ar.data_sources`` (``shapes``: the ShapesT2I demo
data of the ``infinity-shapes`` package). An entry point names a factory
``(config: DataSection, *, rank, world_size, batch_size, stride) -> DataSource``; it is imported only when a config
names it, so the core never imports a source's package.

A source yields ``(images_B3HW in [-1, 1], captions, keys)`` forever, where ``keys`` identify each sample's place in
the global data stream (the same sample has the same key on any number of workers; the trainer seeds each sample's
random draws from it). The global batch ``data.batch_size`` is split evenly over the workers; the resume position
(``state_dict``) counts global batches, so a run resumes on another number of workers exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from infinity_run.distributed import mix_seed

from bitwise_ar.train.config import DataSection
from bitwise_ar.train.data import BucketedLoader, load_records

ENTRY_POINT_GROUP = "bitwise_ar.data_sources"
# The package that provides each documented source, named in the error when it is not installed.
PROVIDERS = {"shapes": "infinity-shapes"}

Batch = tuple[torch.Tensor, list[str], list[int]]


class DataSource(Protocol):
    """What the trainer reads: endless batches, a resume position, and the fixed image size if there is one."""

    image_size: tuple[int, int] | None

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def __iter__(self) -> Iterator[Batch]: ...


SourceFactory = Callable[..., DataSource]


def image_to_tensor(image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1).div(127.5).sub(1.0)


class IndexedSource:
    """Endless batches of a deterministic ``sample(key) -> (image_3HW in [-1, 1], caption)``; global batch ``k``
    holds keys ``[k G, (k + 1) G)`` (G = ``batch_size x world_size``), of which rank ``r`` takes
    ``[k G + r B, k G + (r + 1) B)``. ``kind`` names the source in its resume position."""

    def __init__(
        self,
        sample: Callable[[int], tuple[torch.Tensor, str]],
        *,
        kind: str,
        batch_size: int,
        seed: int,
        image_size: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.sample, self.kind = sample, kind
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.image_size = (image_size, image_size)
        self.batch = 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def state_dict(self) -> dict:
        return {"kind": self.kind, "batch": self.batch, "seed": self.seed, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict) -> None:
        # checkpoints written before "global_batch" was recorded hold "world_size" and a per-worker batch
        saved_global = state.get("global_batch", self.batch_size * state.get("world_size", self.world_size))
        if state.get("kind") != self.kind or state.get("seed") != self.seed or saved_global != self.global_batch:
            raise ValueError(
                f"cannot resume data position {state} with a {self.kind} source of seed {self.seed}, global batch "
                f"{self.global_batch}"
            )
        self.batch = int(state["batch"])

    def __iter__(self) -> Iterator[Batch]:
        while True:
            first = self.batch * self.global_batch + self.rank * self.batch_size
            keys = list(range(first, first + self.batch_size))
            images, captions = zip(*(self.sample(k) for k in keys), strict=True)
            self.batch += 1
            yield torch.stack(images), list(captions), keys


_SYNTHETIC_WORDS = (("red", "green", "blue", "yellow"), ("circle", "square", "triangle", "cat"))


def synthetic_source(config: DataSection, *, rank: int, world_size: int, batch_size: int, stride: int) -> IndexedSource:
    """``data.source = "synthetic"``: a random 4x4 colour grid upsampled to ``data.image_size`` (default 64) and a
    two-word caption per key, drawn from ``(data.seed, key)``. No files, no extra package: tests and smoke runs."""
    if config.options:
        raise ValueError(f"options {sorted(config.options)} do not apply to the synthetic source (it has none)")
    size = config.image_size or 64

    def sample(key: int) -> tuple[torch.Tensor, str]:
        generator = torch.Generator().manual_seed(mix_seed(config.seed, key))
        grid = torch.rand(1, 3, 4, 4, generator=generator) * 2 - 1
        image = torch.nn.functional.interpolate(grid, size=(size, size), mode="nearest")[0]
        colour, thing = (words[int(torch.randint(len(words), (1,), generator=generator))] for words in _SYNTHETIC_WORDS)
        return image, f"a {colour} {thing}"

    return IndexedSource(sample, kind="synthetic", batch_size=batch_size, seed=config.seed, image_size=size,
                         rank=rank, world_size=world_size)  # fmt: skip


BUILTIN_SOURCES: dict[str, SourceFactory] = {"synthetic": synthetic_source}


def source_names() -> dict[str, str]:
    """Names ``data.source`` accepts besides a path, each with where it comes from ("built in" or its package)."""
    names = dict.fromkeys(BUILTIN_SOURCES, "built in")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        names.setdefault(ep.name, ep.dist.name if ep.dist is not None else ep.value.split(":")[0])
    return dict(sorted(names.items()))


def find_source(name: str) -> SourceFactory | None:
    """The factory of the named source (an entry point is imported here, on first use), or ``None``."""
    if name in BUILTIN_SOURCES:
        return BUILTIN_SOURCES[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        return ep.load()
    return None


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

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            yield batch.images_B3HW, batch.captions, batch.keys


def _unknown_source(source: str, section: str = "data") -> str:
    names = source_names()
    what = (f"{section}.source is not set" if not source
            else f"{section}.source {source!r} is neither an existing path nor a known source")  # fmt: skip
    known = ", ".join(f"{name} ({origin})" for name, origin in names.items())
    missing = "".join(
        f"; {name!r} comes with the {package} package, not installed (pip install {package})"
        for name, package in PROVIDERS.items()
        if name not in names
    )
    return f"{what}: give an official jsonl split folder or webdataset shards, or one of the sources {known}{missing}"


def check_source(config: DataSection, section: str = "data") -> None:
    """Refuse, before any worker starts, a ``source`` that is neither a known source name nor an existing path."""
    if not config.source or (config.source not in source_names() and not Path(config.source).exists()):
        raise ValueError(_unknown_source(config.source, section))


def build_source(
    config: DataSection, *, rank: int, world_size: int, batch_size: int, stride: int, section: str = "data"
) -> DataSource:
    """The source ``config.source`` names (see the module docstring); ``batch_size`` is this rank's share of the
    global ``config.batch_size``. ``section`` names the config section in errors (``data``, or ``val`` for the
    held-out source of :class:`bitwise_ar.train.config.ValSection`)."""
    factory = find_source(config.source) if config.source else None
    if factory is not None:
        return factory(config, rank=rank, world_size=world_size, batch_size=batch_size, stride=stride)
    if not config.source or not Path(config.source).exists():
        raise ValueError(_unknown_source(config.source, section))
    if config.options:
        raise ValueError(
            f"{section}.options {sorted(config.options)} only apply to a named source, not to the path {config.source}"
        )
    return LoaderSource(config, rank=rank, world_size=world_size, batch_size=batch_size, stride=stride)
