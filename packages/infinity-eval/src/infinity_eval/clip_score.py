"""CLIP score in its three published definitions, named by variant and model in every metric key.

- ``cos_mean`` — mean raw cosine (what Infinity logs via ImageReward's ``load_score("CLIP")``).
- ``torchmetrics`` — ``max(100 · mean cos, 0)``: torchmetrics clamps *after* averaging.
- ``clip_s`` — Hessel et al.: mean of ``2.5 · max(cos, 0)`` per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from infinity_eval.clip_models import clip_image_features, clip_preprocess, clip_text_features, load_clip


def clip_score_variants(cosines: Sequence[float], model_id: str) -> dict[str, float]:
    """The three CLIP-score aggregates of per-image cosines, keyed ``clip/<model_id>/<variant>``."""
    cos = np.asarray(cosines, dtype=np.float64)
    if cos.size == 0:
        raise ValueError("no CLIP cosines to aggregate")
    key = f"clip/{model_id}"
    return {
        f"{key}/cos_mean": float(cos.mean()),
        f"{key}/torchmetrics": float(max(100.0 * cos.mean(), 0.0)),
        f"{key}/clip_s": float((2.5 * np.clip(cos, 0.0, None)).mean()),
    }


class ClipScorer:
    """Cosine between CLIP image and text embeddings, per pair."""

    def __init__(self, model: Any, tokenizer: Any, *, model_id: str = "vitl14") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, *, model_id: str = "vitl14", device: str = "cpu") -> ClipScorer:
        """Load a local transformers CLIP folder (default model: ``openai/clip-vit-large-patch14``)."""
        return cls(*load_clip(model_dir, device=device), model_id=model_id)

    @torch.no_grad()
    def cosines(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        """``cos(image_i, prompt_i)`` for each pair."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        img = clip_image_features(self.model, torch.stack([clip_preprocess(im) for im in images]))
        txt = clip_text_features(self.model, self.tokenizer, prompts)
        return (img * txt).sum(dim=-1).tolist()
