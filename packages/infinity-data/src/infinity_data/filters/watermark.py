"""Watermark filter: the LAION-5B watermark detector (EfficientNet-B3 + MLP head) from a local weights file.

Preprocessing as published: resize to 256 x 256 ignoring aspect ratio (bilinear), ImageNet mean/std; the score is
``softmax(logits)[watermark_index]``, a probability in [0, 1]. LAION's released model uses index 0 for "watermark"
(other detectors differ, hence the explicit setting). Thresholds in use: LAION-Aesthetics pwatermark < 0.8, Stable
Diffusion v1.2+ < 0.5; our default keeps p < 0.5. Reason code: ``watermark:probability``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .weights import load_state_dict_file, require_file, require_torch

__all__ = ["WatermarkConfig", "WatermarkScorer"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HOW_TO_GET = (
    "Get watermark_model_v1.pt from LAION-AI/LAION-5B-WatermarkDetection (models/) or a mirror such as the "
    "Hugging Face repo kiriyamaX/laion-watermark, and point filters.watermark.weights at it."
)


@dataclass(frozen=True, kw_only=True)
class WatermarkConfig:
    """Settings of the watermark filter; ``max_probability`` is on the [0, 1] probability scale."""

    weights: str = ""
    watermark_index: int = 0
    max_probability: float = 0.5
    image_size: int = 256
    device: str = "cpu"
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.watermark_index not in (0, 1):
            raise ValueError(f"filters.watermark.watermark_index must be 0 or 1, got {self.watermark_index}")
        if not 0.0 < self.max_probability <= 1.0:
            raise ValueError(f"filters.watermark.max_probability must be in (0, 1], got {self.max_probability}")
        if self.image_size < 32 or self.batch_size < 1:
            raise ValueError("filters.watermark.image_size must be >= 32 and batch_size >= 1")

    def check_files(self) -> None:
        """Raise FileNotFoundError (naming the file and how to get it) if the weights are missing."""
        require_file(self.weights, what="watermark filter", how_to_get=HOW_TO_GET, setting="filters.watermark.weights")

    def reason(self, probability: float) -> str | None:
        return "probability" if probability >= self.max_probability else None


class WatermarkScorer:
    """Loads the detector once (per Ray actor); ``score(images)`` returns watermark probabilities."""

    def __init__(self, config: WatermarkConfig) -> None:
        torch = require_torch("watermark filter")
        from .efficientnet import WatermarkNet  # torch at its top: only after the extra is known to be there

        self.config = config
        path = require_file(config.weights, what="watermark filter", how_to_get=HOW_TO_GET, setting="filters.watermark.weights")
        model = WatermarkNet()
        state = load_state_dict_file(path)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{str(path)!r} is not a LAION watermark detector state dict: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        self.device = torch.device(config.device)
        self.model = model.eval().to(self.device)
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def preprocess(self, images: list[Image.Image]) -> np.ndarray:
        """(B, 3, S, S) float32 in [0, 1] before normalisation."""
        size = self.config.image_size
        arrays = [np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)) for im in images]
        return np.stack(arrays).astype(np.float32).transpose(0, 3, 1, 2) / 255.0

    def score(self, images: list[Image.Image]) -> np.ndarray:
        """Watermark probability per image, shape (B,)."""
        import torch

        if not images:
            return np.zeros(0, dtype=np.float32)
        out = []
        for start in range(0, len(images), self.config.batch_size):
            x = torch.from_numpy(self.preprocess(images[start : start + self.config.batch_size]))
            x = ((x - self._mean) / self._std).to(self.device)
            with torch.inference_mode():
                probs = torch.softmax(self.model(x).float(), dim=1)[:, self.config.watermark_index]
            out.append(probs.cpu().numpy())
        return np.concatenate(out)
