"""ShapesT2I: a deterministic synthetic text-to-image dataset (sample ``i`` of seed ``s`` is always the same)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from infinity_shapes.render import Placement, RenderConfig, render
from infinity_shapes.spec import TASKS, PromptSpec, sample_prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ShapesConfig:
    """Which prompts are drawn and how they are rendered."""

    render: RenderConfig = field(default_factory=RenderConfig)
    tasks: tuple[str, ...] = TASKS
    max_count: int = 3

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks}")
        if self.max_count not in (2, 3):
            raise ValueError(f"max_count must be 2 or 3, got {self.max_count}")


@dataclass(frozen=True, kw_only=True)
class ShapesSample:
    """One example: the image, its caption, the spec it was drawn from, and the object placements."""

    image: Image.Image
    caption: str
    spec: PromptSpec
    placements: tuple[Placement, ...]


class ShapesT2I:
    """Indexable, deterministic ShapesT2I split of ``length`` samples drawn from ``seed``."""

    def __init__(self, *, length: int, seed: int = 0, config: ShapesConfig | None = None) -> None:
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        self.length = length
        self.seed = seed
        self.config = config or ShapesConfig()

    def __len__(self) -> int:
        return self.length

    def spec(self, index: int) -> PromptSpec:
        """The prompt of sample ``index`` (cheap: nothing is rendered)."""
        return sample_prompt(self._rng(index, 0), tasks=self.config.tasks, max_count=self.config.max_count)

    def __getitem__(self, index: int) -> ShapesSample:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a split of {self.length}")
        spec = self.spec(index)
        image, placements = render(spec, self.config.render, self._rng(index, 1))
        return ShapesSample(image=image, caption=spec.caption, spec=spec, placements=tuple(placements))

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64([self.seed, index, stream]))


def eval_prompts(num_prompts: int = 240, *, seed: int = 12345, config: ShapesConfig | None = None) -> list[PromptSpec]:
    """A fixed evaluation prompt set, balanced over tasks (``num_prompts // len(tasks)`` each, drawn from ``seed``).

    The default seed differs from the training seeds used in ``configs/train``, so evaluation prompts are (mostly)
    unseen combinations of layout; the prompt grammar is small enough that captions themselves repeat.
    """
    config = config or ShapesConfig()
    per_task = max(1, num_prompts // len(config.tasks))
    rng = np.random.Generator(np.random.PCG64(seed))
    specs = []
    for task in config.tasks:
        specs.extend(sample_prompt(rng, tasks=(task,), max_count=config.max_count) for _ in range(per_task))
    return specs


def write_split(out_dir: str | Path, *, length: int, seed: int = 0, config: ShapesConfig | None = None) -> Path:
    """Write a ShapesT2I split in the official Infinity jsonl format (+ PNG images) and return the splits folder.

    Layout: ``out_dir/images/<index>.png`` and ``out_dir/splits/1.000_<length:09d>.jsonl`` whose ``image_path`` entries
    are relative to ``out_dir``'s parent's parent, like the official toy data (``data/<name>/images/...``); readers in
    :mod:`bitwise_ar.train.data` accept either that or paths relative to ``out_dir``.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "splits").mkdir(parents=True, exist_ok=True)
    dataset = ShapesT2I(length=length, seed=seed, config=config)
    split = out / "splits" / f"1.000_{length:09d}.jsonl"
    with split.open("w") as handle:
        for i in tqdm(range(length), desc="ShapesT2I", disable=length < 1000):
            sample = dataset[i]
            name = f"{i:07d}.png"
            sample.image.save(out / "images" / name)
            record = {
                "image_path": f"images/{name}",
                "h_div_w": 1.0,
                "long_caption": sample.caption,
                "long_caption_type": "shapes_t2i",
                "text": sample.caption,
                "short_caption_type": "shapes_t2i",
            }
            handle.write(json.dumps(record) + "\n")
    logger.info("wrote %d ShapesT2I samples to %s", length, out)
    return out / "splits"
