"""HPSv2.1: an open_clip ViT-H-14 fine-tuned on human preferences, run as a transformers ``CLIPModel``.

The released checkpoint (``HPS_v2.1_compressed.pt``, ``{"state_dict": <open_clip keys>}``) is converted key by key
into ``CLIPModel`` (exact GELU, LayerNorm eps 1e-5, arg-max end-token pooling as open_clip). The score is
``100 × cos(image, text)`` with HPSv2's preprocessing order (:func:`~infinity_eval.clip_models.hps_preprocess`).
Benchmark aggregation follows ``hpsv2.evaluate``: per style, the mean of 80-image chunk means; "average" over all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from infinity_eval.clip_models import (
    clip_image_features,
    clip_text_features,
    hps_preprocess,
    load_tokenizer,
    require_transformers,
)

logger = logging.getLogger(__name__)

HPS_STYLES = ("anime", "concept-art", "paintings", "photo")
PROMPTS_PER_STYLE = 800
CHUNK = 80


@dataclass(frozen=True, kw_only=True)
class OpenClipVitConfig:
    """Dimensions of an open_clip ViT CLIP (vision heads = width / head_width)."""

    embed_dim: int
    image_size: int = 224
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int
    text_layers: int
    text_heads: int
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for width, heads, what in ((self.vision_width, self.vision_heads, "vision"), (self.text_width, self.text_heads, "text")):
            if width % heads:
                raise ValueError(f"{what} width {width} is not divisible by {heads} heads")


PRESETS = {
    "ViT-H-14": OpenClipVitConfig(embed_dim=1024, patch_size=14, vision_width=1280, vision_layers=32, vision_heads=16,
                                  text_width=1024, text_layers=24, text_heads=16),
}


def _tower(prefix_in: str, prefix_out: str, layers: int, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for i in range(layers):
        src, dst = f"{prefix_in}transformer.resblocks.{i}.", f"{prefix_out}encoder.layers.{i}."
        qkv_w, qkv_b = state[src + "attn.in_proj_weight"], state[src + "attn.in_proj_bias"]
        for name, w, b in zip(("q", "k", "v"), qkv_w.chunk(3), qkv_b.chunk(3)):
            out[f"{dst}self_attn.{name}_proj.weight"], out[f"{dst}self_attn.{name}_proj.bias"] = w, b
        pairs = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
                 "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
        for a, b in pairs.items():
            for p in ("weight", "bias"):
                out[f"{dst}{b}.{p}"] = state[f"{src}{a}.{p}"]
    return out


def openclip_to_hf_state(state: Mapping[str, torch.Tensor], cfg: OpenClipVitConfig) -> dict[str, torch.Tensor]:
    """Rename/split open_clip ViT CLIP parameters into transformers ``CLIPModel`` names."""
    try:
        out = {
            "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
            "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
            "text_model.final_layer_norm.weight": state["ln_final.weight"],
            "text_model.final_layer_norm.bias": state["ln_final.bias"],
            "text_projection.weight": state["text_projection"].T.contiguous(),
            "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
            "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
            "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
            "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],
            "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
            "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
            "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
            "visual_projection.weight": state["visual.proj"].T.contiguous(),
            "logit_scale": state["logit_scale"],
        }
        out.update(_tower("", "text_model.", cfg.text_layers, state))
        out.update(_tower("visual.", "vision_model.", cfg.vision_layers, state))
    except KeyError as exc:
        raise ValueError(f"not an open_clip ViT state dict for this architecture: missing {exc}") from exc
    return out


def hf_clip_config(cfg: OpenClipVitConfig) -> Any:
    """transformers ``CLIPConfig`` equivalent to an open_clip ViT (non-OpenAI: exact GELU)."""
    transformers = require_transformers()
    text = {"vocab_size": cfg.vocab_size, "hidden_size": cfg.text_width, "num_hidden_layers": cfg.text_layers,
            "num_attention_heads": cfg.text_heads, "intermediate_size": int(cfg.text_width * cfg.mlp_ratio),
            "max_position_embeddings": cfg.context_length, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
            # eos_token_id == 2 selects arg-max pooling over token ids, which is open_clip's rule.
            "eos_token_id": 2, "bos_token_id": 0, "pad_token_id": 1}
    vision = {"hidden_size": cfg.vision_width, "num_hidden_layers": cfg.vision_layers,
              "num_attention_heads": cfg.vision_heads, "intermediate_size": int(cfg.vision_width * cfg.mlp_ratio),
              "image_size": cfg.image_size, "patch_size": cfg.patch_size, "hidden_act": "gelu", "layer_norm_eps": 1e-5}
    return transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.embed_dim)


class HPSv21:
    """HPS scorer: ``score(images, prompts)`` → ``100 × cos`` per pair."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, tokenizer_dir: str | Path, *, arch: str | OpenClipVitConfig = "ViT-H-14",
                        device: str = "cpu") -> HPSv21:
        """Load ``HPS_v2.1_compressed.pt`` (open_clip keys under ``state_dict``) and a CLIP tokenizer folder."""
        transformers = require_transformers()
        cfg = PRESETS[arch] if isinstance(arch, str) else arch
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"HPSv2.1 weights not found: {checkpoint} (HPS_v2.1_compressed.pt; see `infinity-eval weights`)")
        blob = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
        model = transformers.CLIPModel(hf_clip_config(cfg))
        missing, _unexpected = model.load_state_dict(openclip_to_hf_state(state, cfg), strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing:
            raise ValueError(f"{checkpoint}: parameters missing after conversion: {missing[:5]}")
        return cls(model.to(device).eval(), load_tokenizer(tokenizer_dir))

    @torch.no_grad()
    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        """HPS of each (image, prompt) pair: the diagonal of ``100 · img @ txt.T``."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        img = clip_image_features(self.model, torch.stack([hps_preprocess(im) for im in images]))
        txt = clip_text_features(self.model, self.tokenizer, prompts)
        return (100.0 * (img * txt).sum(dim=-1)).tolist()


def aggregate_hps(scores_by_style: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """``hpsv21/<style>`` = mean of 80-image chunk means (hpsv2's rule); ``hpsv21/average`` = mean of all images."""
    out: dict[str, float] = {}
    everything: list[float] = []
    for style, scores in scores_by_style.items():
        scores = list(scores)
        if not scores:
            raise ValueError(f"no HPS scores for style {style!r}")
        out[f"hpsv21/{style}"] = float(np.mean([np.mean(scores[i : i + CHUNK]) for i in range(0, len(scores), CHUNK)]))
        everything += scores
    out["hpsv21/average"] = float(np.mean(everything))
    return out
