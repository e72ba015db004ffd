"""Aesthetic filter: LAION improved aesthetic predictor V2 ("Aesthetic-V2" in the Infinity paper).

Score = MLP(CLIP image embedding / ||embedding||_2), the raw regression output in AVA rating units (roughly 1-10;
the LAION-Aesthetics subsets are 4.5+, 5+, 6+, 6.25+, 6.5+; Stable Diffusion used > 5.0). The MLP is
768-1024-128-64-16-1 with dropout and no activations (``sac+logos+ava1-l14-linearMSE.pth``); the embedding comes from
OpenAI CLIP ViT-L/14 (``CLIPVisionModelWithProjection``) loaded from a LOCAL directory. CLIP preprocessing: resize the
short side bicubic to the model's image size, center crop, CLIP mean/std. We keep the raw units (Data-Juicer divides by
10; NeMo Curator's 0-1 documentation is wrong) -- ``min_score = 5.0`` means 5 on the 1-10 scale.
Reason code: ``aesthetic:low_score``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .weights import load_state_dict_file, require_file, require_torch

__all__ = ["AestheticConfig", "AestheticScorer", "build_aesthetic_mlp"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HOW_TO_GET_MLP = (
    "Get sac+logos+ava1-l14-linearMSE.pth from christophschuhmann/improved-aesthetic-predictor (GitHub) and point "
    "filters.aesthetic.mlp_weights at it."
)
HOW_TO_GET_CLIP = (
    "Download openai/clip-vit-large-patch14 once (e.g. `huggingface-cli download openai/clip-vit-large-patch14 "
    "--local-dir <dir>`) and point filters.aesthetic.clip_dir at that directory."
)


@dataclass(frozen=True, kw_only=True)
class AestheticConfig:
    """Settings of the aesthetic filter; ``min_score`` is in raw predictor units (about 1-10)."""

    clip_dir: str = ""
    mlp_weights: str = ""
    min_score: float = 5.0
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 10.0:
            raise ValueError(
                f"filters.aesthetic.min_score={self.min_score} is outside the raw 1-10 scale of the LAION predictor "
                "(did you pass a 0-1 value? 0.5 there means 5.0 here)"
            )
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"filters.aesthetic.dtype must be float32, float16 or bfloat16, got {self.dtype!r}")
        if self.batch_size < 1:
            raise ValueError("filters.aesthetic.batch_size must be >= 1")

    def check_files(self) -> None:
        """Raise FileNotFoundError (naming the file and how to get it) if CLIP or the MLP weights are missing."""
        clip = require_file(self.clip_dir, what="aesthetic filter (CLIP)", how_to_get=HOW_TO_GET_CLIP, setting="filters.aesthetic.clip_dir")
        if not (clip / "config.json").is_file():
            raise FileNotFoundError(
                f"aesthetic filter (CLIP): {str(clip / 'config.json')!r} does not exist, so {str(clip)!r} is not a "
                f"saved transformers model. {HOW_TO_GET_CLIP}"
            )
        require_file(self.mlp_weights, what="aesthetic filter (MLP)", how_to_get=HOW_TO_GET_MLP, setting="filters.aesthetic.mlp_weights")

    def reason(self, score: float) -> str | None:
        return "low_score" if score < self.min_score else None


def build_aesthetic_mlp(input_dim: int = 768):  # -> torch.nn.Module
    """The predictor's MLP, with the parameter names of the published ``.pth`` files (``layers.{0,2,4,6,7}``)."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(input_dim, 1024),
        nn.Dropout(0.2),
        nn.Linear(1024, 128),
        nn.Dropout(0.2),
        nn.Linear(128, 64),
        nn.Dropout(0.1),
        nn.Linear(64, 16),
        nn.Linear(16, 1),
    )


class AestheticScorer:
    """Loads CLIP + MLP once (per Ray actor); ``score(images)`` returns raw aesthetic scores."""

    def __init__(self, config: AestheticConfig) -> None:
        torch = require_torch("aesthetic filter")
        try:
            from transformers import CLIPVisionModelWithProjection
        except ImportError as exc:
            raise ImportError("the aesthetic filter needs transformers: pip install 'infinity-data[models]'") from exc
        config.check_files()
        self.config = config
        self.device = torch.device(config.device)
        self.dtype = getattr(torch, config.dtype)
        clip = CLIPVisionModelWithProjection.from_pretrained(str(Path(config.clip_dir)), local_files_only=True)
        self.clip = clip.eval().to(self.device, self.dtype)
        self.image_size = int(clip.config.image_size)
        state = load_state_dict_file(config.mlp_weights)
        state = {k.removeprefix("layers."): v for k, v in state.items()}
        first = state.get("0.weight")
        if first is None:
            raise ValueError(f"{config.mlp_weights!r} is not an aesthetic-predictor MLP state dict (no layers.0.weight)")
        if first.shape[1] != clip.config.projection_dim:
            raise ValueError(
                f"aesthetic MLP expects {first.shape[1]}-d embeddings but CLIP in {config.clip_dir!r} projects to "
                f"{clip.config.projection_dim}; use the CLIP the MLP was trained on (ViT-L/14 for the LAION files)"
            )
        self.mlp = build_aesthetic_mlp(first.shape[1])
        self.mlp.load_state_dict(state)
        self.mlp = self.mlp.eval().to(self.device)
        self._mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def preprocess(self, images: list[Image.Image]) -> np.ndarray:
        """CLIP preprocessing to (B, 3, S, S) float32 in [0, 1] (before mean/std)."""
        size = self.image_size
        arrays = []
        for image in images:
            image = image.convert("RGB")
            scale = size / min(image.size)
            resized = image.resize(
                (max(size, round(image.width * scale)), max(size, round(image.height * scale))), Image.Resampling.BICUBIC
            )
            left, top = (resized.width - size) // 2, (resized.height - size) // 2
            arrays.append(np.asarray(resized.crop((left, top, left + size, top + size))))
        return np.stack(arrays).astype(np.float32).transpose(0, 3, 1, 2) / 255.0

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        """L2-normalised CLIP image embeddings (B, D) as float32."""
        import torch

        x = (torch.from_numpy(self.preprocess(images)) - self._mean) / self._std
        with torch.inference_mode():
            emb = self.clip(pixel_values=x.to(self.device, self.dtype)).image_embeds.float()
        emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return emb.cpu().numpy()

    def score(self, images: list[Image.Image]) -> np.ndarray:
        """Raw aesthetic score per image, shape (B,)."""
        import torch

        if not images:
            return np.zeros(0, dtype=np.float32)
        out = []
        for start in range(0, len(images), self.config.batch_size):
            emb = torch.from_numpy(self.embed(images[start : start + self.config.batch_size])).to(self.device)
            with torch.inference_mode():
                out.append(self.mlp(emb).squeeze(-1).float().cpu().numpy())
        return np.concatenate(out)
