"""GenEval's colour classifier: CLIP zero-shot over 10 colours on mask-composited object crops.

Upstream uses open_clip ViT-L-14 with OpenAI weights through clip_benchmark; the same weights exist as the
transformers ``openai/clip-vit-large-patch14`` folder, which is what this loads. Per class, each colour's classifier
weight is the re-normalised mean of the normalised text embeddings of three templates; an object is pasted onto a
#999 grey canvas through its mask, cropped to its box and classified by the arg-max of the cosine logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from infinity_eval.clip_models import clip_image_features, clip_preprocess, clip_text_features, load_clip
from infinity_eval.geneval.prompts import COLORS
from infinity_eval.geneval.scoring import Detection

TEMPLATES = ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object")
BACKGROUND = "#999"


def color_prompts(classname: str) -> list[list[str]]:
    """The 3 templates × 10 colours for one class (outer list: colours, in :data:`COLORS` order)."""
    return [[t.format(c=c, cls=classname) for t in TEMPLATES] for c in COLORS]


def object_crop(image: Image.Image, det: Detection, background: str = BACKGROUND) -> Image.Image:
    """The object composited onto a grey canvas through its mask (if any), cropped to its box."""
    image = image.convert("RGB")
    if det.mask is not None:
        if tuple(det.mask.shape) != (image.height, image.width):
            raise ValueError(f"mask shape {det.mask.shape} does not match image size {image.height}x{image.width}")
        blank = Image.new("RGB", image.size, color=background)
        image = Image.composite(image, blank, Image.fromarray(det.mask.astype("uint8") * 255))
    return image.crop(tuple(det.box))


class ClipColorClassifier:
    """Zero-shot colour classification with a transformers CLIP model."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self._weights: dict[str, torch.Tensor] = {}

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, *, device: str = "cpu") -> ClipColorClassifier:
        """Load from a local CLIP folder (``openai/clip-vit-large-patch14`` layout)."""
        return cls(*load_clip(model_dir, device=device))

    def class_weights(self, classname: str) -> torch.Tensor:
        """``(E, 10)`` classifier for one object class (cached)."""
        if classname not in self._weights:
            cols = []
            for prompts in color_prompts(classname):
                emb = clip_text_features(self.model, self.tokenizer, prompts).mean(dim=0)
                cols.append(emb / emb.norm())
            self._weights[classname] = torch.stack(cols, dim=1)
        return self._weights[classname]

    @torch.no_grad()
    def __call__(self, image: Image.Image, objects: Sequence[Detection], classname: str) -> list[str]:
        """One colour name per object."""
        if not objects:
            return []
        pixels = torch.stack([clip_preprocess(object_crop(image, det)) for det in objects])
        logits = 100.0 * clip_image_features(self.model, pixels) @ self.class_weights(classname)
        return [COLORS[i] for i in F.softmax(logits, dim=-1).argmax(dim=-1).tolist()]
