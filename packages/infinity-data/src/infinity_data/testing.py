"""Synthetic inputs and tiny models for tests, benchmarks and demos (no network, deterministic given a seed).

:func:`make_synthetic_shards` writes webdataset tars mixing clean photos-like images with every failure the curator
must handle, and returns the expected outcome of each key (``"keep"`` or the reason code).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .filters.aesthetic import build_aesthetic_mlp

__all__ = [
    "clean_image",
    "make_synthetic_shards",
    "save_tiny_aesthetic",
    "save_tiny_watermark",
    "text_image",
]


def clean_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A text-free, photo-like image: smooth colour gradient with a few soft ellipses."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 215, size=3)
    slope = rng.uniform(-60, 60, size=(3, 2))
    channels = [base[c] + slope[c, 0] * x / width + slope[c, 1] * y / height for c in range(3)]
    image = Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.1, 0.3) * min(width, height)
        colour = tuple(int(v) for v in rng.integers(0, 255, size=3))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    return image


def text_image(rng: np.random.Generator, width: int, height: int, lines: int = 9) -> Image.Image:
    """A text-heavy poster: many lines of dark text on a light background."""
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(200, 250, size=3)))
    draw = ImageDraw.Draw(image)
    size = max(12, height // (lines * 2))
    font = ImageFont.load_default(size=size)
    words = ["SALE", "today", "only", "50%", "OFF", "everything", "must", "go", "visit", "store", "now"]
    for i in range(lines):
        text = " ".join(rng.choice(words, size=6))
        draw.text((10, 10 + i * (height - 20) / lines), text, fill=(0, 0, 0), font=font)
    return image


def _jpeg(image: Image.Image, quality: int = 90, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, **kwargs)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_synthetic_shards(
    folder: str | Path,
    *,
    num_shards: int = 3,
    clean_per_shard: int = 4,
    seed: int = 0,
    size: int = 320,
    hard_cases: bool = True,
    with_text: bool = True,
) -> dict[str, str]:
    """Write ``shard-00000.tar`` ... into ``folder``; return ``{key: expected}`` (``"keep"`` or a reason code).

    Per shard: ``clean_per_shard`` clean images (one of them rotated by EXIF and one CMYK/RGBA/16-bit when
    ``hard_cases``), plus with ``hard_cases``: a too-small image, an extreme aspect ratio, a corrupt file, a truncated
    JPEG, an exact duplicate and a near duplicate (re-encoded) of the previous shard's first clean image, and (with
    ``with_text``) a text-heavy poster. Expected codes assume ``pn = "0.06M"`` and the default thresholds.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    expected: dict[str, str] = {}
    previous_first: tuple[bytes, Image.Image] | None = None
    for shard in range(num_shards):
        samples: list[tuple[str, bytes, str, str]] = []  # key, image bytes, extension, expected
        first: tuple[bytes, Image.Image] | None = None
        for i in range(clean_per_shard):
            w, h = (size, size) if i % 2 == 0 else (int(size * 1.5), size)
            image = clean_image(rng, w, h)
            data, ext = _jpeg(image), "jpg"
            if hard_cases and i == 1:
                # EXIF orientation 6: stored landscape, displayed portrait.
                exif = Image.Exif()
                exif[0x0112] = 6
                data = _jpeg(image, exif=exif.tobytes())
            elif hard_cases and i == 2:
                kind = shard % 3
                if kind == 0:
                    data = _jpeg(image.convert("CMYK"))
                elif kind == 1:
                    rgba = image.convert("RGBA")
                    rgba.putalpha(200)
                    data, ext = _png(rgba), "png"
                else:
                    grey16 = Image.fromarray((np.asarray(image.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
                    data, ext = _png(grey16), "png"
            if i == 0:
                first = (data, image)
            samples.append((f"s{shard:03d}-clean{i}", data, ext, "keep"))
        if hard_cases:
            samples.append((f"s{shard:03d}-small", _jpeg(clean_image(rng, 96, 96)), "jpg", "resolution:too_small"))
            samples.append((f"s{shard:03d}-wide", _jpeg(clean_image(rng, 1400, 260)), "jpg", "aspect_ratio:crop_loss"))
            samples.append((f"s{shard:03d}-corrupt", b"this is not an image" * 10, "jpg", "error:corrupt"))
            full = _jpeg(clean_image(rng, size, size))
            samples.append((f"s{shard:03d}-truncated", full[: len(full) // 2], "jpg", "error:truncated"))
            if with_text:
                samples.append((f"s{shard:03d}-poster", _jpeg(text_image(rng, size, size)), "jpg", "ocr:text_area"))
            if previous_first is not None:
                data, image = previous_first
                samples.append((f"s{shard:03d}-exactdup", data, "jpg", "dedup:exact"))
                samples.append((f"s{shard:03d}-neardup", _jpeg(image, quality=70), "jpg", "dedup:near"))
        previous_first = first
        with tarfile.open(folder / f"shard-{shard:05d}.tar", "w") as tar:
            for key, data, ext, outcome in samples:
                _add(tar, f"{key}.{ext}", data)
                _add(tar, f"{key}.txt", f"caption of {key}".encode())
                _add(tar, f"{key}.json", json.dumps({"source_id": key}).encode())
                expected[key] = outcome
    return expected


def save_tiny_watermark(path: str | Path, *, watermark_logit: float | None = None, seed: int = 0) -> Path:
    """Save a randomly initialised LAION-architecture watermark detector state dict (``{"weights": ...}`` layout).

    With ``watermark_logit`` the last layer is zeroed and its bias set to ``[watermark_logit, -watermark_logit]``,
    so every image gets ``softmax[0] = sigmoid(2 * watermark_logit)`` -- a known answer for index tests.
    """
    import torch

    from .filters.efficientnet import WatermarkNet

    torch.manual_seed(seed)
    model = WatermarkNet().eval()
    state = model.state_dict()
    if watermark_logit is not None:
        state["classifier.5.weight"] = torch.zeros_like(state["classifier.5.weight"])
        state["classifier.5.bias"] = torch.tensor([watermark_logit, -watermark_logit])
    path = Path(path)
    torch.save({"weights": state}, path)
    return path


def save_tiny_aesthetic(folder: str | Path, *, constant_score: float | None = None, seed: int = 0) -> tuple[Path, Path]:
    """Save a tiny random CLIP vision tower (``clip/``) and an aesthetic MLP (``mlp.pth``) for it; returns both paths.

    With ``constant_score`` the MLP's last layer is zeroed and its bias set, so every image scores exactly that.
    """
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = Path(folder)
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
        projection_dim=16,
    )
    CLIPVisionModelWithProjection(config).eval().save_pretrained(folder / "clip")
    mlp = build_aesthetic_mlp(16)
    state = {f"layers.{k}": v for k, v in mlp.state_dict().items()}
    if constant_score is not None:
        state["layers.7.weight"] = torch.zeros_like(state["layers.7.weight"])
        state["layers.7.bias"] = torch.tensor([constant_score])
    torch.save(state, folder / "mlp.pth")
    return folder / "clip", folder / "mlp.pth"
