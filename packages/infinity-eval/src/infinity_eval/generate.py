"""Generating benchmark images through a model adapter, resumably, with one seed per sample.

An adapter is anything with ``generate(prompts, seeds) -> list[PIL.Image]`` (one image per prompt, each drawn from
its own seed). ``--model`` accepts a ``bitwise-ar`` pipeline folder (:class:`InfinityPipelineAdapter`) or
``package.module:factory`` returning an adapter.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from PIL import Image
from tqdm.auto import tqdm

from infinity_eval.benchmarks import SampleRef

logger = logging.getLogger(__name__)


class ImageGenerator(Protocol):
    """What the runner needs from a model."""

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]: ...

    def describe(self) -> dict[str, str]: ...


class InfinityPipelineAdapter:
    """``bitwise_ar.pipeline.InfinityPipeline`` as an :class:`ImageGenerator`.

    Each image is generated in its own call with ``torch.Generator().manual_seed(seed)``, so an image depends only
    on (prompt, seed) — not on batch composition, order or worker.
    """

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", sampling: Mapping[str, Any] | None = None,
                 resolution: str | None = None, aspect_ratio: str | None = None,
                 image_size: tuple[int, int] | None = None) -> None:
        try:
            from bitwise_ar.pipeline import InfinityPipeline
        except ImportError as exc:  # pragma: no cover - needs the extra
            raise ImportError("generation needs bitwise-ar: pip install 'infinity-eval[generate]'") from exc
        self.model_dir = Path(model_dir)
        self.pipe = InfinityPipeline.from_pretrained(self.model_dir, device=device)
        self.sampling = None
        if sampling:
            import dataclasses

            self.sampling = dataclasses.replace(self.pipe.defaults.sampling, **dict(sampling))
        self.resolution, self.aspect_ratio, self.image_size = resolution, aspect_ratio, image_size

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        import torch

        images = []
        for prompt, seed in zip(prompts, seeds):
            out = self.pipe([prompt], sampling=self.sampling, resolution=self.resolution, aspect_ratio=self.aspect_ratio,
                            image_size=self.image_size, generator=torch.Generator().manual_seed(int(seed)))
            images.append(out.images[0])
        return images

    def describe(self) -> dict[str, str]:
        import dataclasses

        sampling = self.sampling or self.pipe.defaults.sampling
        return {"model": str(self.model_dir), "adapter": "bitwise_ar.InfinityPipeline",
                "sampling": json.dumps(dataclasses.asdict(sampling), sort_keys=True),
                "resolution": str(self.resolution or self.pipe.defaults.resolution),
                "image_size": str(self.image_size or self.pipe.defaults.image_size)}


def load_generator(spec: str, **options: Any) -> ImageGenerator:
    """A pipeline folder, or ``module:factory`` (called with ``options``)."""
    if Path(spec).is_dir():
        return InfinityPipelineAdapter(spec, **options)
    if ":" in spec:
        module_name, attr = spec.split(":", 1)
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import model adapter {spec!r}: {exc}") from exc
        return factory(**options)
    raise FileNotFoundError(f"--model {spec!r} is neither a pipeline folder nor a 'module:factory' adapter")


def save_image_atomic(image: Image.Image, path: Path) -> None:
    """Write via a temporary file and rename, so an interrupted run never leaves a truncated image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def generate_missing(generator: ImageGenerator, refs: Sequence[SampleRef], *, batch_size: int = 4,
                     progress: bool = True) -> int:
    """Generate every slot whose image file does not exist yet; returns how many were generated."""
    todo = [r for r in refs if not r.path.is_file()]
    if len(todo) < len(refs):
        logger.info("resuming generation: %d of %d images already present", len(refs) - len(todo), len(refs))
    bar = tqdm(total=len(todo), desc="generate", disable=not progress)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        images = generator.generate([r.record.prompt for r in chunk], [r.seed for r in chunk])
        if len(images) != len(chunk):
            raise ValueError(f"model adapter returned {len(images)} images for {len(chunk)} prompts")
        for ref, image in zip(chunk, images):
            save_image_atomic(image.convert("RGB"), ref.path)
        bar.update(len(chunk))
    bar.close()
    return len(todo)
