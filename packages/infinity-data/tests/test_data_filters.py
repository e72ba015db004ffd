"""Model filters on real code paths: RapidOCR for real, tiny random watermark / CLIP models saved and reloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from infinity_data.filters.aesthetic import CLIP_MEAN, CLIP_STD, AestheticConfig
from infinity_data.filters.efficientnet import EfficientNetB3, WatermarkNet
from infinity_data.filters.ocr import OcrConfig, text_area_ratio
from infinity_data.filters.watermark import WatermarkConfig
from infinity_data.testing import clean_image, save_tiny_aesthetic, save_tiny_watermark, text_image
from PIL import Image, ImageDraw, ImageFont


@pytest.fixture(scope="module")
def ocr_scorer():
    pytest.importorskip("rapidocr", reason="RapidOCR is not installed: pip install 'infinity-data[ocr]'")
    from infinity_data.filters.ocr import TextAreaScorer

    return TextAreaScorer(OcrConfig())


def test_text_area_ratio_is_a_union():
    square = np.array([[0, 0], [50, 0], [50, 50], [0, 50]], dtype=float)
    area, count = text_area_ratio(np.stack([square, square]), 100, 100)
    assert count == 2 and area == pytest.approx(0.25, abs=0.02)  # overlapping boxes count once
    assert text_area_ratio(None, 10, 10) == (0.0, 0)


def test_ocr_separates_text_heavy_from_text_free_images(ocr_scorer):
    rng = np.random.default_rng(0)
    clean = [ocr_scorer.score(clean_image(rng, 320, 320))[0] for _ in range(4)]
    posters = [ocr_scorer.score(text_image(rng, 320, 320))[0] for _ in range(2)]
    caption_line = Image.fromarray(np.asarray(clean_image(rng, 480, 320)))
    ImageDraw.Draw(caption_line).text((10, 290), "photo by someone", fill=(255, 255, 255), font=ImageFont.load_default(size=18))
    line_area, line_boxes = ocr_scorer.score(caption_line)
    headline = Image.new("RGB", (320, 200), (250, 250, 250))
    ImageDraw.Draw(headline).text((10, 40), "BIG SALE", fill=(0, 0, 0), font=ImageFont.load_default(size=90))
    assert max(clean) == 0.0
    assert min(posters) > 0.3
    assert line_boxes >= 1 and 0.0 < line_area < 0.1
    assert ocr_scorer.score(headline)[0] > 0.2  # a thick box, confirmed by the recogniser
    config = OcrConfig()
    assert config.reason(min(posters), 9) == "text_area" and config.reason(line_area, line_boxes) is None
    assert OcrConfig(max_boxes=3).reason(0.01, 5) == "text_boxes"


def test_efficientnet_b3_matches_timm_layout():
    # Parameter count of timm's efficientnet_b3 (ImageNet head) and of the LAION watermark variant.
    assert sum(p.numel() for p in EfficientNetB3().parameters()) == 12_233_232
    net = WatermarkNet()
    keys = net.state_dict()
    assert keys["classifier.0.weight"].shape == (625, 1536) and keys["classifier.5.weight"].shape == (2, 256)
    assert keys["blocks.6.1.conv_pwl.weight"].shape == (384, 2304, 1, 1)
    assert keys["blocks.0.0.se.conv_reduce.weight"].shape == (10, 40, 1, 1)
    assert len(net.blocks) == 7 and [len(s) for s in net.blocks] == [2, 3, 3, 5, 5, 6, 2]


def test_efficientnet_keys_and_shapes_equal_timm_efficientnet_b3a():
    # Generated once with timm 1.0.31: create_model("efficientnet_b3a", num_classes=2) + the LAION classifier head;
    # a forward pass with shared random weights matched ours exactly (max abs diff 0.0).
    listing = (Path(__file__).parent / "fixtures" / "timm_efficientnet_b3a_watermark_keys.txt").read_text().splitlines()
    expected = [(line.split(" ", 1)[0], line.split(" ", 1)[1]) for line in listing if line.strip()]
    ours = [(k, str(tuple(v.shape))) for k, v in WatermarkNet().state_dict().items()]
    assert ours == expected


def test_watermark_index_is_explicit(tmp_path):
    pytest.importorskip("torch")
    from infinity_data.filters.watermark import WatermarkScorer

    weights = save_tiny_watermark(tmp_path / "wm.pt", watermark_logit=3.0)
    images = [clean_image(np.random.default_rng(i), 300, 200) for i in range(2)]
    # 64 px inputs keep the CPU test fast; the published 256 px preprocessing runs in the next test.
    p0 = WatermarkScorer(WatermarkConfig(weights=str(weights), watermark_index=0, image_size=64)).score(images)
    p1 = WatermarkScorer(WatermarkConfig(weights=str(weights), watermark_index=1, image_size=64)).score(images)
    expected = 1 / (1 + np.exp(-6.0))  # softmax([3, -3])[0]
    np.testing.assert_allclose(p0, expected, rtol=1e-5)
    np.testing.assert_allclose(p1, 1 - expected, rtol=1e-4)
    config = WatermarkConfig(weights=str(weights))
    assert config.reason(float(p0[0])) == "probability" and config.reason(float(p1[0])) is None


def test_watermark_random_weights_reload_gives_probabilities(tmp_path):
    pytest.importorskip("torch")
    from infinity_data.filters.watermark import WatermarkScorer

    weights = save_tiny_watermark(tmp_path / "wm.pt")
    probs = WatermarkScorer(WatermarkConfig(weights=str(weights))).score([clean_image(np.random.default_rng(0), 64, 64)])
    assert probs.shape == (1,) and 0.0 <= probs[0] <= 1.0


def test_missing_weights_name_the_file_and_the_source(tmp_path):
    missing = tmp_path / "watermark_model_v1.pt"
    with pytest.raises(FileNotFoundError, match=r"watermark_model_v1\.pt.*LAION-5B-WatermarkDetection.*Nothing is downloaded"):
        WatermarkConfig(weights=str(missing)).check_files()
    with pytest.raises(FileNotFoundError, match=r"filters.aesthetic.clip_dir"):
        AestheticConfig(clip_dir="", mlp_weights="x").check_files()
    clip, _ = tmp_path / "clip", None
    clip.mkdir()
    (clip / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"sac\+logos\+ava1-l14-linearMSE\.pth"):
        AestheticConfig(clip_dir=str(clip), mlp_weights=str(tmp_path / "sac+logos+ava1-l14-linearMSE.pth")).check_files()


def test_aesthetic_score_is_mlp_of_normalised_clip_embedding(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from infinity_data.filters.aesthetic import AestheticScorer

    clip_dir, mlp_path = save_tiny_aesthetic(tmp_path)
    scorer = AestheticScorer(AestheticConfig(clip_dir=str(clip_dir), mlp_weights=str(mlp_path)))
    rng = np.random.default_rng(0)
    images = [clean_image(rng, 96, 64), clean_image(rng, 50, 80)]
    scores = scorer.score(images)
    # Independent computation: transformers' own CLIP preprocessing + model, then L2 norm, then the saved MLP.
    processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)
    )
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    model = transformers.CLIPVisionModelWithProjection.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        emb = model(pixel_values=pixels).image_embeds
        emb = emb / emb.norm(dim=-1, keepdim=True)
        state = torch.load(mlp_path, weights_only=True)
        x = emb
        for i in (0, 2, 4, 6, 7):
            x = x @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    np.testing.assert_allclose(scores, x.squeeze(-1).numpy(), atol=2e-3)


def test_aesthetic_threshold_is_in_raw_units(tmp_path):
    pytest.importorskip("transformers")
    from infinity_data.filters.aesthetic import AestheticScorer

    clip_dir, mlp_path = save_tiny_aesthetic(tmp_path, constant_score=6.5)
    config = AestheticConfig(clip_dir=str(clip_dir), mlp_weights=str(mlp_path), min_score=5.0)
    scores = AestheticScorer(config).score([clean_image(np.random.default_rng(0), 40, 40)])
    assert scores[0] == pytest.approx(6.5, abs=1e-5)
    assert config.reason(6.5) is None and AestheticConfig(min_score=7.0).reason(6.5) == "low_score"
