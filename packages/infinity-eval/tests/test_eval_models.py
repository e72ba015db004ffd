"""CLIP score, HPSv2.1 and ImageReward on tiny random models in the released on-disk formats.

Each converted transformers model is checked against an independent forward written here directly on the
original (open_clip / BLIP) parameter names, so a wrong key mapping cannot pass.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from infinity_eval.clip_models import OPENAI_MEAN, OPENAI_STD, clip_preprocess, hps_preprocess
from infinity_eval.clip_score import ClipScorer, clip_score_variants
from infinity_eval.hps import HPSv21, aggregate_hps
from infinity_eval.imagereward import REWARD_MEAN, REWARD_STD, ImageReward
from infinity_eval.testing import write_tiny_clip, write_tiny_hps, write_tiny_imagereward
from PIL import Image


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, size=s, dtype=np.uint8)) for s in ((100, 150, 3), (300, 240, 3))]


def _block(x: torch.Tensor, sd: dict, p: str, heads: int, causal: bool, eps: float = 1e-5) -> torch.Tensor:
    width = x.shape[-1]
    attn = torch.nn.MultiheadAttention(width, heads, batch_first=True)  # the module open_clip itself uses
    attn.load_state_dict({"in_proj_weight": sd[p + "attn.in_proj_weight"], "in_proj_bias": sd[p + "attn.in_proj_bias"],
                          "out_proj.weight": sd[p + "attn.out_proj.weight"], "out_proj.bias": sd[p + "attn.out_proj.bias"]})
    h = F.layer_norm(x, (width,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], eps)
    mask = torch.full((x.shape[1], x.shape[1]), float("-inf")).triu(1) if causal else None
    x = x + attn(h, h, h, attn_mask=mask, need_weights=False)[0]
    h = F.layer_norm(x, (width,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], eps)
    return x + F.linear(F.gelu(F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])),
                        sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])


@torch.no_grad()
def _openclip_reference(sd: dict, cfg, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """cos(image, text) computed on open_clip parameter names."""
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=cfg.patch_size).flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], 1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, (cfg.vision_width,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"])
    for i in range(cfg.vision_layers):
        x = _block(x, sd, f"visual.transformer.resblocks.{i}.", cfg.vision_heads, causal=False)
    img = F.layer_norm(x[:, 0], (cfg.vision_width,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"]) @ sd["visual.proj"]
    t = sd["token_embedding.weight"][ids] + sd["positional_embedding"]
    for i in range(cfg.text_layers):
        t = _block(t, sd, f"transformer.resblocks.{i}.", cfg.text_heads, causal=True)
    t = F.layer_norm(t, (cfg.text_width,), sd["ln_final.weight"], sd["ln_final.bias"])
    txt = t[torch.arange(t.shape[0]), ids.argmax(-1)] @ sd["text_projection"]
    return (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(-1)


def test_hps_matches_open_clip_reference_forward(tmp_path: Path, images: list[Image.Image]) -> None:
    ckpt, tok, cfg = write_tiny_hps(tmp_path)
    scorer = HPSv21.from_checkpoint(ckpt, tok, arch=cfg)
    prompts = ["a photo of a red dog", "blue cat"]
    got = scorer.score(images, prompts)
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    ids = scorer.tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")["input_ids"]
    pixels = torch.stack([hps_preprocess(im) for im in images])
    expected = 100 * _openclip_reference(sd, cfg, pixels, ids)  # ×100 scale of hpsv2.evaluate
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-3)
    # The ToTensor-first order matters: PIL-first preprocessing gives a measurably different score.
    pil_first = 100 * _openclip_reference(sd, cfg, torch.stack([clip_preprocess(im) for im in images]), ids)
    assert np.max(np.abs(pil_first.numpy() - np.asarray(got))) > 1e-3
    with pytest.raises(FileNotFoundError, match=r"HPS_v2\.1_compressed\.pt"):
        HPSv21.from_checkpoint(tmp_path / "none" / "HPS_v2.1_compressed.pt", tok, arch=cfg)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        scorer.score(images, prompts[:1])


def test_hps_aggregation_uses_chunk_means() -> None:
    scores = list(np.arange(100, dtype=float))  # chunks [0..79] and [80..99]: means 39.5 and 89.5
    out = aggregate_hps({"anime": scores, "photo": [1.0, 3.0]})
    assert out["hpsv21/anime"] == pytest.approx((39.5 + 89.5) / 2)
    assert out["hpsv21/photo"] == pytest.approx(2.0)
    assert out["hpsv21/average"] == pytest.approx((sum(scores) + 4.0) / 102)


def test_hps_preprocessing_is_tensor_first_and_normalised() -> None:
    flat = Image.new("RGB", (320, 240), (255, 0, 128))
    x = hps_preprocess(flat)
    assert x.shape == (3, 224, 224)
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor(OPENAI_MEAN)) / torch.tensor(OPENAI_STD)
    torch.testing.assert_close(x[:, 100, 100], expected, atol=1e-5, rtol=0)


@torch.no_grad()
def _blip_vit_reference(sd: dict, cfg, pixels: torch.Tensor, prefix: str = "blip.visual_encoder.") -> torch.Tensor:
    x = F.conv2d(pixels, sd[prefix + "patch_embed.proj.weight"], sd[prefix + "patch_embed.proj.bias"], stride=cfg.patch_size)
    x = torch.cat([sd[prefix + "cls_token"].expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], 1) + sd[prefix + "pos_embed"]
    w, heads = cfg.width, cfg.heads
    for i in range(cfg.depth):
        p = f"{prefix}blocks.{i}."
        h = F.layer_norm(x, (w,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
        q, k, v = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]).reshape(x.shape[0], -1, 3, heads, w // heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape)
        x = x + F.linear(a, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (w,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)
        x = x + F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return F.layer_norm(x, (w,), sd[prefix + "norm.weight"], sd[prefix + "norm.bias"], 1e-6)


def test_imagereward_loads_released_layout_and_scores(tmp_path: Path, images: list[Image.Image]) -> None:
    folder, vit = write_tiny_imagereward(tmp_path / "ir")
    model = ImageReward.from_pretrained(folder, vit=vit)
    sd = torch.load(folder / "ImageReward.pt", weights_only=True)
    pixels = torch.stack([clip_preprocess(im) for im in images])
    with torch.no_grad():
        got_vit = model.vision(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(got_vit, _blip_vit_reference(sd, vit, pixels), atol=1e-4, rtol=1e-4)
    prompts = ["a photo of a red dog", "concept art of a vehicle, cyberpunk " * 20]
    enc = model.tokenizer(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    assert enc["input_ids"].shape == (2, 35) and enc["attention_mask"][0].sum() < 35 and enc["attention_mask"][1].all()
    rewards = model.score(images, prompts)
    with torch.no_grad():
        out = model.text(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], encoder_hidden_states=got_vit,
                         encoder_attention_mask=torch.ones(got_vit.shape[:2], dtype=torch.long))
        raw = model.mlp(out.last_hidden_state[:, 0])[:, 0]
    np.testing.assert_allclose(rewards, ((raw - REWARD_MEAN) / REWARD_STD).numpy(), atol=1e-5)
    assert rewards[0] != rewards[1]
    (folder / "med_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"med_config\.json"):
        ImageReward.from_pretrained(folder, vit=vit)


def test_clip_score_variants_and_scorer(tmp_path: Path, images: list[Image.Image], caplog: pytest.LogCaptureFixture) -> None:
    cos = [0.3, -0.1, 0.2]
    v = clip_score_variants(cos, "vitl14")
    assert v["clip/vitl14/cos_mean"] == pytest.approx(0.4 / 3)
    assert v["clip/vitl14/torchmetrics"] == pytest.approx(100 * 0.4 / 3)
    assert v["clip/vitl14/clip_s"] == pytest.approx(2.5 * 0.5 / 3)
    assert clip_score_variants([-0.2, -0.1], "m")["clip/m/torchmetrics"] == 0.0  # clamp after the mean
    scorer = ClipScorer.from_pretrained(write_tiny_clip(tmp_path / "clip"))
    prompts = ["a photo of a red dog", "cat " * 100]
    with caplog.at_level(logging.WARNING):
        got = scorer.cosines(images, prompts)
    assert "truncated" in caplog.text
    ids = scorer.tokenizer(prompts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = scorer.model(input_ids=ids, pixel_values=torch.stack([clip_preprocess(im) for im in images]))
    expected = (F.normalize(out.image_embeds, dim=-1) * F.normalize(out.text_embeds, dim=-1)).sum(-1)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        ClipScorer.from_pretrained(tmp_path / "nothing")
