"""Shared tiny components for the bitwise-ar tests: a model and layout (``ar_``), synthetic training data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bitwise_ar.layout import ScaleLayout
from bitwise_ar.testing import tiny_transformer
from bitwise_ar.train.config import DataSection
from bitwise_ar.train.sources import synthetic_source
from PIL import Image

# A 128x128-pixel 1:1 schedule (the first five scales of the official 1:1 table): 121 tokens.
SMALL_SCHEDULE = [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8)]


@pytest.fixture(scope="session")
def ar_model():
    return tiny_transformer(seed=0)


@pytest.fixture(scope="session")
def ar_layout() -> ScaleLayout:
    return ScaleLayout.build(SMALL_SCHEDULE, rope_reference=(64, 64))


def _synthetic_images(length: int, seed: int) -> list[tuple[Image.Image, str]]:
    """``length`` samples of the built-in synthetic source as (PIL image, caption)."""
    source = synthetic_source(DataSection(source="synthetic", seed=seed, image_size=64), rank=0, world_size=1,
                              batch_size=length, stride=8)  # fmt: skip
    images, captions, _ = next(iter(source))
    pixels = images.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [(Image.fromarray(p), c) for p, c in zip(pixels, captions, strict=True)]


@pytest.fixture
def synthetic_images():
    """``synthetic_images(length, seed=0)``: synthetic-source samples as (PIL image, caption) pairs."""
    return lambda length, seed=0: _synthetic_images(length, seed)


@pytest.fixture
def write_jsonl_split():
    """``write_jsonl_split(out_dir, length, seed=0)``: synthetic samples as an official jsonl split (PNG images,
    ``splits/1.000_<length>.jsonl``); returns the splits folder."""

    def write(out_dir: Path, length: int, seed: int = 0) -> Path:
        (out_dir / "images").mkdir(parents=True)
        (out_dir / "splits").mkdir()
        lines = []
        for i, (image, caption) in enumerate(_synthetic_images(length, seed)):
            image.save(out_dir / "images" / f"{i:07d}.png")
            lines.append(json.dumps({"image_path": f"images/{i:07d}.png", "h_div_w": 1.0, "long_caption": caption,
                                     "text": caption}))  # fmt: skip
        (out_dir / "splits" / f"1.000_{length:09d}.jsonl").write_text("\n".join(lines) + "\n")
        return out_dir / "splits"

    return write
