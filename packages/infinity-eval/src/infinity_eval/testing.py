"""Builders of small random models in the real on-disk formats, for tests, demos and smoke runs.

Nothing here downloads anything; every builder takes an explicit seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch


def write_random_fid_inception(path: str | Path, *, seed: int = 0) -> Path:
    """Save a seeded random FID Inception state dict (same keys and shapes as the released ``.pth``)."""
    from infinity_eval.fid.inception import FIDInceptionV3

    gen = torch.Generator().manual_seed(seed)
    model = FIDInceptionV3()
    state = model.state_dict()
    for name, tensor in state.items():
        if name.endswith("conv.weight"):
            fan_in = tensor[0].numel()
            # He-normal keeps ReLU activations O(1) through the 94 layers, so pool3 features are informative.
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * math.sqrt(2.0 / fan_in))
        elif name.endswith("bn.weight"):
            tensor.copy_(1.0 + 0.1 * torch.randn(tensor.shape, generator=gen))
        elif name.endswith("bn.bias"):
            tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
        elif name.endswith("running_var"):
            tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
        elif name.endswith("running_mean"):
            tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
        elif name.startswith("fc."):
            tensor.copy_(0.01 * torch.randn(tensor.shape, generator=gen))
    path = Path(path)
    torch.save(state, path)
    return path


def _bytes_to_unicode() -> list[str]:
    # GPT-2/CLIP byte-level alphabet: printable bytes map to themselves, the rest to code points from 256 up.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


TINY_WORDS = ("photo", "red", "blue", "green", "dog", "cat", "of")


def write_tiny_clip_tokenizer(folder: str | Path) -> Path:
    """A CLIP-format BPE tokenizer (byte alphabet + a few merges; end token has the largest id, as in CLIP)."""
    from transformers import CLIPTokenizer

    alphabet = _bytes_to_unicode()
    vocab = [*alphabet, *(c + "</w>" for c in alphabet)]
    merges: list[tuple[str, str]] = []
    for word in TINY_WORDS:
        left = word[0]
        for i, ch in enumerate(word[1:], 1):
            right = ch + ("</w>" if i == len(word) - 1 else "")
            merges.append((left, right))
            left = left + right
            if left not in vocab:
                vocab.append(left)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_clip_vocab_size(folder: str | Path) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(str(folder), local_files_only=True))


def write_tiny_clip(folder: str | Path, *, seed: int = 0) -> Path:
    """A small transformers CLIPModel (224 px input, patch 32, width 32) plus tokenizer, saved with save_pretrained."""
    from transformers import CLIPConfig, CLIPModel

    folder = write_tiny_clip_tokenizer(folder)
    vocab = tiny_clip_vocab_size(folder)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"vocab_size": vocab, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "intermediate_size": 64, "max_position_embeddings": 77, "eos_token_id": 2,
                     "bos_token_id": vocab - 2, "pad_token_id": 1},
        vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                       "image_size": 224, "patch_size": 32},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    return folder


def _random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[-1]
        is_norm = any(t in name for t in ("ln_", "norm", "LayerNorm"))
        if is_norm and leaf == "weight":
            state[name] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif leaf == "bias" or is_norm:
            state[name] = 0.02 * torch.randn(shape, generator=gen)
        else:
            fan_in = shape[-1] if len(shape) > 1 else 1
            state[name] = torch.randn(shape, generator=gen) / math.sqrt(max(fan_in, 1)) * (0.5 if len(shape) > 1 else 0.1)
    return state


def openclip_vit_shapes(cfg: object) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of an open_clip ViT CLIP (``visual.*`` + text tower), as in its state dict."""
    c = cfg  # OpenClipVitConfig
    grid = (c.image_size // c.patch_size) ** 2  # type: ignore[attr-defined]
    shapes: dict[str, tuple[int, ...]] = {
        "positional_embedding": (c.context_length, c.text_width),  # type: ignore[attr-defined]
        "text_projection": (c.text_width, c.embed_dim),  # type: ignore[attr-defined]
        "logit_scale": (),
        "token_embedding.weight": (c.vocab_size, c.text_width),  # type: ignore[attr-defined]
        "ln_final.weight": (c.text_width,), "ln_final.bias": (c.text_width,),  # type: ignore[attr-defined]
        "visual.class_embedding": (c.vision_width,),  # type: ignore[attr-defined]
        "visual.positional_embedding": (grid + 1, c.vision_width),  # type: ignore[attr-defined]
        "visual.proj": (c.vision_width, c.embed_dim),  # type: ignore[attr-defined]
        "visual.conv1.weight": (c.vision_width, 3, c.patch_size, c.patch_size),  # type: ignore[attr-defined]
    }
    for p in ("visual.ln_pre", "visual.ln_post"):
        shapes[f"{p}.weight"] = shapes[f"{p}.bias"] = (c.vision_width,)  # type: ignore[attr-defined]
    for prefix, width, layers in (("", c.text_width, c.text_layers), ("visual.", c.vision_width, c.vision_layers)):  # type: ignore[attr-defined]
        hidden = int(width * c.mlp_ratio)  # type: ignore[attr-defined]
        for i in range(layers):
            b = f"{prefix}transformer.resblocks.{i}."
            shapes.update({
                b + "ln_1.weight": (width,), b + "ln_1.bias": (width,), b + "ln_2.weight": (width,), b + "ln_2.bias": (width,),
                b + "attn.in_proj_weight": (3 * width, width), b + "attn.in_proj_bias": (3 * width,),
                b + "attn.out_proj.weight": (width, width), b + "attn.out_proj.bias": (width,),
                b + "mlp.c_fc.weight": (hidden, width), b + "mlp.c_fc.bias": (hidden,),
                b + "mlp.c_proj.weight": (width, hidden), b + "mlp.c_proj.bias": (width,),
            })
    return shapes


def tiny_hps_config(vocab_size: int) -> object:
    from infinity_eval.hps import OpenClipVitConfig

    return OpenClipVitConfig(embed_dim=16, patch_size=32, vision_width=32, vision_layers=2, vision_heads=2,
                             vocab_size=vocab_size, text_width=32, text_layers=2, text_heads=2)


def write_tiny_hps(folder: str | Path, *, seed: int = 0) -> tuple[Path, Path, object]:
    """``HPS_v2.1_compressed.pt``-format checkpoint (``{"state_dict": open_clip keys}``) of a tiny ViT + tokenizer.

    Returns (checkpoint path, tokenizer folder, OpenClipVitConfig).
    """
    folder = Path(folder)
    tok = write_tiny_clip_tokenizer(folder / "tokenizer")
    cfg = tiny_hps_config(tiny_clip_vocab_size(tok))
    state = _random_state(openclip_vit_shapes(cfg), seed)
    state["logit_scale"] = torch.tensor(math.log(100.0))
    path = folder / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": state}, path)
    return path, tok, cfg


TINY_MED_CONFIG = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
                   "hidden_dropout_prob": 0.1, "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64,
                   "layer_norm_eps": 1e-12, "max_position_embeddings": 64, "model_type": "bert", "num_attention_heads": 2,
                   "num_hidden_layers": 2, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 0,
                   "encoder_width": 32, "add_cross_attention": True}
TINY_BERT_WORDS = ("a", "photo", "of", "red", "blue", "dog", "cat", "concept", "art", "vehicle", ",", "cyberpunk")


def tiny_blip_vit() -> object:
    from infinity_eval.imagereward import BlipVitConfig

    return BlipVitConfig(width=32, depth=2, heads=2, patch_size=32)


def blip_vit_shapes(cfg: object, prefix: str = "blip.visual_encoder.") -> dict[str, tuple[int, ...]]:
    """Parameter names/shapes of BLIP's timm-style ViT as stored in ``ImageReward.pt``."""
    w, depth, p = cfg.width, cfg.depth, cfg.patch_size  # type: ignore[attr-defined]
    grid = (cfg.image_size // p) ** 2  # type: ignore[attr-defined]
    hidden = int(w * cfg.mlp_ratio)  # type: ignore[attr-defined]
    shapes = {prefix + "cls_token": (1, 1, w), prefix + "pos_embed": (1, grid + 1, w),
              prefix + "patch_embed.proj.weight": (w, 3, p, p), prefix + "patch_embed.proj.bias": (w,),
              prefix + "norm.weight": (w,), prefix + "norm.bias": (w,)}
    for i in range(depth):
        b = f"{prefix}blocks.{i}."
        shapes.update({b + "norm1.weight": (w,), b + "norm1.bias": (w,), b + "norm2.weight": (w,), b + "norm2.bias": (w,),
                       b + "attn.qkv.weight": (3 * w, w), b + "attn.qkv.bias": (3 * w,),
                       b + "attn.proj.weight": (w, w), b + "attn.proj.bias": (w,),
                       b + "mlp.fc1.weight": (hidden, w), b + "mlp.fc1.bias": (hidden,),
                       b + "mlp.fc2.weight": (w, hidden), b + "mlp.fc2.bias": (w,)})
    return shapes


def write_tiny_imagereward(folder: str | Path, *, seed: int = 0) -> tuple[Path, object]:
    """A folder with ``ImageReward.pt`` (released key layout), ``med_config.json`` and a BERT tokenizer (vocab.txt)."""
    import json

    from transformers import BertTokenizer, BlipTextConfig, BlipTextModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_BERT_WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    med = dict(TINY_MED_CONFIG, vocab_size=len(vocab) + 2)  # + [DEC], [ENC] as BLIP's tokenizer adds
    (folder / "med_config.json").write_text(json.dumps(med, indent=2))
    vit = tiny_blip_vit()
    text_model = BlipTextModel(BlipTextConfig(vocab_size=med["vocab_size"], hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                              encoder_hidden_size=vit.width, bos_token_id=None,
                                              sep_token_id=None), add_pooling_layer=False)  # type: ignore[attr-defined]
    shapes = blip_vit_shapes(vit)
    shapes.update({f"blip.text_encoder.{k}": tuple(v.shape) for k, v in text_model.state_dict().items()
                   if not k.endswith("position_ids")})
    shapes.update({"mlp.layers.0.weight": (1024, 32), "mlp.layers.0.bias": (1024,), "mlp.layers.2.weight": (128, 1024),
                   "mlp.layers.2.bias": (128,), "mlp.layers.4.weight": (64, 128), "mlp.layers.4.bias": (64,),
                   "mlp.layers.6.weight": (16, 64), "mlp.layers.6.bias": (16,), "mlp.layers.7.weight": (1, 16),
                   "mlp.layers.7.bias": (1,), "blip.vision_proj.weight": (256, 32), "blip.vision_proj.bias": (256,)})
    state = _random_state(shapes, seed)
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(64)[None]
    torch.save(state, folder / "ImageReward.pt")
    return folder, vit


def write_tiny_mask2former(folder: str | Path, *, seed: int = 0, num_queries: int = 10) -> Path:
    """A small transformers Mask2Former (Swin backbone, 80 COCO classes) saved with save_pretrained."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1, decoder_layers=2,
                               num_attention_heads=2, num_queries=num_queries, num_labels=80, common_stride=4)
    torch.manual_seed(seed)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    return Path(folder)


def write_demo_assets(folder: str | Path, *, seed: int = 0) -> Path:
    """Everything the README examples need, tiny and random: ``pipe/`` (bitwise-ar pipeline, if installed),
    ``clip/`` (CLIP folder), ``pt_inception-2015-12-05-6726825d.pth`` (FID Inception state dict) and
    ``reference/`` (2 real ShapesT2I images, a FID reference set)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_clip(folder / "clip", seed=seed)
    write_random_fid_inception(folder / "pt_inception-2015-12-05-6726825d.pth", seed=seed)
    try:
        from bitwise_ar.testing import build_tiny_pipeline
        from infinity_shapes import ShapesT2I
    except ImportError:  # pragma: no cover - the generate and shapes extras are optional
        return folder

    build_tiny_pipeline(folder / "pipe", seed=seed)
    (folder / "reference").mkdir(exist_ok=True)
    shapes = ShapesT2I(length=2, seed=seed)
    for i in range(2):
        shapes[i].image.resize((64, 64)).save(folder / "reference" / f"{i}.png")
    return folder


if __name__ == "__main__":  # python -m infinity_eval.testing demo-assets DIR
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "demo-assets":
        sys.exit("usage: python -m infinity_eval.testing demo-assets DIR")
    write_demo_assets(sys.argv[2])
