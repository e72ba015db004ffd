"""``data.source = "shapes"`` for the bitwise-ar trainer: endless ShapesT2I batches, rendered on the fly.

Registered under the entry-point group ``bitwise_ar.data_sources`` (this package's ``pyproject.toml``), so the trainer
finds it by name without importing this package until a config asks for it. ``data.options`` sets the
:class:`~infinity_shapes.render.RenderConfig` fields ``grid``, ``ordered`` and ``rows``; ``data.image_size`` is the
image side (default 64) and ``data.seed`` the dataset seed.
"""

from __future__ import annotations

import torch
from bitwise_ar.train.config import DataSection
from bitwise_ar.train.sources import IndexedSource, image_to_tensor

from infinity_shapes.dataset import ShapesConfig, ShapesT2I
from infinity_shapes.render import RenderConfig

#: The ``data.options`` keys this source reads (fields of :class:`RenderConfig`).
OPTIONS = ("grid", "ordered", "rows")


def shapes_source(config: DataSection, *, rank: int, world_size: int, batch_size: int, stride: int) -> IndexedSource:
    """ShapesT2I sample ``k`` is the data stream's key ``k`` (same samples on any number of workers)."""
    unknown = sorted(set(config.options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"options {unknown} unknown for the shapes source; it reads {', '.join(OPTIONS)}")
    render = RenderConfig(image_size=config.image_size or 64, **config.options)
    dataset = ShapesT2I(length=2**62, seed=config.seed, config=ShapesConfig(render=render))

    def sample(key: int) -> tuple[torch.Tensor, str]:
        item = dataset[key]
        return image_to_tensor(item.image), item.caption

    return IndexedSource(sample, kind="shapes", batch_size=batch_size, seed=config.seed, image_size=render.image_size,
                         rank=rank, world_size=world_size)  # fmt: skip
