"""CLIP towers (transformers ``CLIPModel``) loaded from local folders, plus the two image preprocessing orders.

- :func:`clip_preprocess` — OpenAI/open_clip evaluation transform: PIL bicubic resize of the short side, centre crop,
  ``ToTensor``, OpenAI mean/std (used by CLIP score, GenEval's colour classifier and ImageReward).
- :func:`hps_preprocess` — HPSv2's order: ``ToTensor`` *first*, then a tensor bicubic resize (antialiased, as
  torchvision's tensor default), centre crop, OpenAI mean/std.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

logger = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CONTEXT_LENGTH = 77


def require_transformers(extra: str = "models") -> Any:
    """Import transformers or fail with the install command."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"this metric needs transformers: pip install 'infinity-eval[{extra}]'") from exc
    return transformers


def check_model_dir(path: str | Path, what: str, *, weights: Sequence[str] = ("model.safetensors", "pytorch_model.bin")) -> Path:
    """Raise ``FileNotFoundError`` naming the missing files of a ``save_pretrained`` folder."""
    path = Path(path)
    missing = []
    if not (path / "config.json").is_file():
        missing.append(str(path / "config.json"))
    if weights and not any((path / w).is_file() for w in weights) and not list(path.glob("*.safetensors")):
        missing.append(str(path / weights[0]))
    if missing:
        raise FileNotFoundError(f"{what} weights missing: {', '.join(missing)} (see `infinity-eval weights`)")
    return path


def _resize_short_side(size_hw: tuple[int, int], short: int) -> tuple[int, int]:
    # torchvision's rule: the long side is truncated, not rounded.
    h, w = size_hw
    if h <= w:
        return short, int(short * w / h)
    return int(short * h / w), short


def _center_crop_offsets(h: int, w: int, size: int) -> tuple[int, int]:
    return round((h - size) / 2.0), round((w - size) / 2.0)


def clip_preprocess(image: Image.Image, size: int = 224, mean: Sequence[float] = OPENAI_MEAN,
                    std: Sequence[float] = OPENAI_STD) -> torch.Tensor:
    """PIL-first CLIP transform; returns float32 ``(3, size, size)``."""
    image = image.convert("RGB")
    h, w = _resize_short_side((image.height, image.width), size)
    image = image.resize((w, h), resample=Image.Resampling.BICUBIC)
    top, left = _center_crop_offsets(h, w, size)
    image = image.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def hps_preprocess(image: Image.Image, size: int = 224) -> torch.Tensor:
    """HPSv2 transform: ToTensor, tensor bicubic resize (antialias), centre crop, normalise; ``(3, size, size)``."""
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    h, w = _resize_short_side((x.shape[1], x.shape[2]), size)
    x = F.interpolate(x[None], size=(h, w), mode="bicubic", align_corners=False, antialias=True)[0]
    top, left = _center_crop_offsets(h, w, size)
    x = x[:, top : top + size, left : left + size]
    return (x - torch.tensor(OPENAI_MEAN)[:, None, None]) / torch.tensor(OPENAI_STD)[:, None, None]


def load_clip(model_dir: str | Path, *, device: str = "cpu") -> tuple[Any, Any]:
    """``CLIPModel`` and tokenizer from a local ``save_pretrained`` folder (no hub access)."""
    transformers = require_transformers()
    model_dir = check_model_dir(model_dir, "CLIP")
    model = transformers.CLIPModel.from_pretrained(model_dir, local_files_only=True).to(device).eval()
    tokenizer = load_tokenizer(model_dir)
    return model, tokenizer


def load_tokenizer(model_dir: str | Path) -> Any:
    """Tokenizer saved next to a model (``tokenizer.json`` or vocab/merges); raises naming the folder if absent."""
    transformers = require_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"no tokenizer files in {model_dir} (tokenizer.json or vocab.json+merges.txt): {exc}") from exc


def tokenize(tokenizer: Any, prompts: Sequence[str], *, max_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Token ids ``(B, max_length)``, truncated like CLIP (end token kept); logs a warning for truncated prompts."""
    full = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    for prompt, ids in zip(prompts, full):
        if len(ids) > max_length:
            logger.warning("prompt truncated to %d tokens (%d): %.60s...", max_length, len(ids), prompt)
    enc = tokenizer(list(prompts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return enc["input_ids"]


@torch.no_grad()
def clip_text_features(model: Any, tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
    """L2-normalised text embeddings ``(B, E)``. No padding mask: the causal tower pools the end token."""
    ids = tokenize(tokenizer, prompts).to(next(model.parameters()).device)
    feats = model.get_text_features(input_ids=ids)
    feats = getattr(feats, "pooler_output", feats)
    return F.normalize(feats.float(), dim=-1)


@torch.no_grad()
def clip_image_features(model: Any, pixel_values_B3HW: torch.Tensor) -> torch.Tensor:
    """L2-normalised image embeddings ``(B, E)``."""
    feats = model.get_image_features(pixel_values=pixel_values_B3HW.to(next(model.parameters()).device))
    feats = getattr(feats, "pooler_output", feats)
    return F.normalize(feats.float(), dim=-1)
