"""ImageReward v1.0: BLIP ViT-L/16 + BERT-base with cross-attention + MLP head, from local files.

Files in the weights folder: ``ImageReward.pt`` (the released state dict: ``blip.visual_encoder.*`` timm-style ViT,
``blip.text_encoder.*`` BLIP "med" BERT, ``mlp.layers.*``), ``med_config.json`` and the ``bert-base-uncased``
tokenizer files. The ViT is loaded into transformers ``BlipVisionModel`` (renamed keys, LayerNorm eps 1e-6 as BLIP)
and the text encoder into ``BlipTextModel`` (same names as BLIP's med.py). Score: the multimodal [CLS] feature of the
prompt (padded/truncated to 35 tokens) cross-attending to the image, through the MLP 768→1024→128→64→16→1, then
``(r − 0.16717362830052426) / 1.0333394966054072``. Images: PIL bicubic short side 224, centre crop, CLIP mean/std.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from infinity_eval.clip_models import clip_preprocess, require_transformers

logger = logging.getLogger(__name__)

REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
MAX_TEXT_TOKENS = 35
WEIGHTS_FILE = "ImageReward.pt"
MED_CONFIG_FILE = "med_config.json"


@dataclass(frozen=True, kw_only=True)
class BlipVitConfig:
    """BLIP vision transformer dimensions."""

    image_size: int = 224
    patch_size: int = 16
    width: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by {self.heads} heads")


VIT_PRESETS = {"large": BlipVitConfig(width=1024, depth=24, heads=16), "base": BlipVitConfig(width=768, depth=12, heads=12)}


def reward_head(input_size: int) -> nn.Sequential:
    """ImageReward's MLP (dropouts at indices 1, 3, 5 keep the released parameter names ``layers.{0,2,4,6,7}``)."""
    return nn.Sequential(nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                         nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))


def blip_vit_to_hf_state(state: Mapping[str, torch.Tensor], depth: int, prefix: str = "blip.visual_encoder.") -> dict[str, torch.Tensor]:
    """timm-style BLIP ViT names → transformers ``BlipVisionModel`` names."""
    out = {
        "embeddings.class_embedding": state[prefix + "cls_token"],
        "embeddings.position_embedding": state[prefix + "pos_embed"],
        "embeddings.patch_embedding.weight": state[prefix + "patch_embed.proj.weight"],
        "embeddings.patch_embedding.bias": state[prefix + "patch_embed.proj.bias"],
        "post_layernorm.weight": state[prefix + "norm.weight"],
        "post_layernorm.bias": state[prefix + "norm.bias"],
    }
    pairs = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
             "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(depth):
        for a, b in pairs.items():
            for p in ("weight", "bias"):
                out[f"encoder.layers.{i}.{b}.{p}"] = state[f"{prefix}blocks.{i}.{a}.{p}"]
    return out


class ImageReward(nn.Module):
    """The ImageReward model; ``score(images, prompts)`` returns normalised rewards."""

    def __init__(self, vision: nn.Module, text: nn.Module, head: nn.Sequential, tokenizer: Any) -> None:
        super().__init__()
        self.vision = vision
        self.text = text
        self.mlp = head
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, vit: str | BlipVitConfig = "large", device: str = "cpu") -> ImageReward:
        """Load ``ImageReward.pt`` + ``med_config.json`` + tokenizer files from one local folder."""
        transformers = require_transformers()
        folder = Path(folder)
        missing = [str(folder / f) for f in (WEIGHTS_FILE, MED_CONFIG_FILE) if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"ImageReward weights missing: {', '.join(missing)} (see `infinity-eval weights`)")
        vit_cfg = VIT_PRESETS[vit] if isinstance(vit, str) else vit
        med = json.loads((folder / MED_CONFIG_FILE).read_text())
        state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        vision = transformers.BlipVisionModel(transformers.BlipVisionConfig(
            hidden_size=vit_cfg.width, num_hidden_layers=vit_cfg.depth, num_attention_heads=vit_cfg.heads,
            intermediate_size=int(vit_cfg.width * vit_cfg.mlp_ratio), image_size=vit_cfg.image_size,
            patch_size=vit_cfg.patch_size, hidden_act="gelu", layer_norm_eps=1e-6))
        text = transformers.BlipTextModel(transformers.BlipTextConfig(
            vocab_size=med["vocab_size"], hidden_size=med["hidden_size"], num_hidden_layers=med["num_hidden_layers"],
            num_attention_heads=med["num_attention_heads"], intermediate_size=med["intermediate_size"],
            max_position_embeddings=med["max_position_embeddings"], layer_norm_eps=med.get("layer_norm_eps", 1e-12),
            hidden_act=med.get("hidden_act", "gelu"), encoder_hidden_size=vit_cfg.width, pad_token_id=med.get("pad_token_id", 0),
            # BLIP's [DEC]/[SEP] ids only matter for decoding; unset them so small vocabularies validate.
            bos_token_id=None, sep_token_id=None),
            add_pooling_layer=False)
        try:
            vision.load_state_dict(blip_vit_to_hf_state(state, vit_cfg.depth), strict=True)
            text_state = {k.removeprefix("blip.text_encoder."): v for k, v in state.items()
                          if k.startswith("blip.text_encoder.") and not k.endswith("position_ids")}
            text.load_state_dict(text_state, strict=False)
            absent = set(text.state_dict()) - set(text_state) - {k for k in text.state_dict() if k.endswith("position_ids")}
            if absent:
                raise KeyError(f"text encoder parameters missing: {sorted(absent)[:5]}")
            head = reward_head(med["hidden_size"])
            head.load_state_dict({k.removeprefix("mlp.layers."): v for k, v in state.items() if k.startswith("mlp.layers.")}, strict=True)
        except (KeyError, RuntimeError) as exc:
            raise ValueError(f"{folder / WEIGHTS_FILE} does not match the ImageReward architecture: {exc}") from exc
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise FileNotFoundError(f"bert-base-uncased tokenizer files (vocab.txt) missing in {folder}: {exc}") from exc
        return cls(vision, text, head, tokenizer).to(device).eval()

    @torch.no_grad()
    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        """Normalised reward of each (image, prompt) pair."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        device = next(self.parameters()).device
        enc = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_TEXT_TOKENS,
                             return_tensors="pt").to(device)
        pixels = torch.stack([clip_preprocess(im) for im in images]).to(device)
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=device)
        out = self.text(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                        encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts)
        rewards = self.mlp(out.last_hidden_state[:, 0, :].float())
        return ((rewards[:, 0] - REWARD_MEAN) / REWARD_STD).tolist()
