"""The packaged demo model is the CLI default (the README's main command) and its stored image size is honoured."""

from __future__ import annotations

import dataclasses

import pytest
from bitwise_ar.cli import DEMO_MODEL_DIR, main
from bitwise_ar.pipeline import InfinityPipeline
from bitwise_ar.testing import build_tiny_pipeline
from bsq_tokenizer.schedules import schedule_for_latent
from PIL import Image


def test_stored_default_image_size_applies_only_when_nothing_is_asked(tmp_path):
    pipe = InfinityPipeline.from_pretrained(build_tiny_pipeline(tmp_path / "model", seed=0))
    stride = pipe.tokenizer.config.patch_size
    pipe.defaults = dataclasses.replace(pipe.defaults, image_size=(4 * stride, 6 * stride))
    assert pipe.layout_for().schedule == tuple(schedule_for_latent(4, 6))
    # Anything the caller asks for wins over the stored size.
    assert pipe.layout_for(resolution="0.06M").schedule[-1] == (16, 16)
    assert pipe.layout_for(image_size=(2 * stride, 2 * stride)).schedule[-1] == (2, 2)


@pytest.mark.skipif(not (DEMO_MODEL_DIR / "pipeline.json").is_file(), reason="no packaged demo model")
def test_readme_main_command_with_the_packaged_demo_model(tmp_path, capsys):
    out, strip = tmp_path / "demo.png", tmp_path / "previews.png"
    code = main(["generate", "two red circles to the left of a blue square", "--seed", "1", "-o", str(out),
                 "--previews", str(strip)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    pipe = InfinityPipeline.from_pretrained(DEMO_MODEL_DIR)
    expected = pipe.layout_for().schedule[-1]
    stride = pipe.tokenizer.config.patch_size
    with Image.open(out) as image:
        assert image.mode == "RGB"
        assert image.size == (expected[1] * stride, expected[0] * stride)
    with Image.open(strip) as previews:
        assert previews.width > previews.height  # a coarse-to-fine strip, one tile per scale
    # The picture follows its prompt: ShapesEval's checks (count, colour, shape, relation) pass on it.
    from bitwise_ar.shapes import parse_caption, score_image

    with Image.open(out) as image:
        verdict = score_image(image.convert("RGB"), parse_caption("two red circles to the left of a blue square"))
    assert verdict.correct, verdict


@pytest.mark.skipif(not (DEMO_MODEL_DIR / "pipeline.json").is_file(), reason="no packaged demo model")
def test_packaged_demo_model_follows_prompts():
    """A small ShapesEval run of the packaged model: far above what a broken export or sampler would score
    (the full 240-prompt score is in docs/training.md)."""
    from bitwise_ar.train.demo import evaluate_pipeline

    result, images, specs = evaluate_pipeline(str(DEMO_MODEL_DIR), num_prompts=48, prompt_seed=99)
    assert len(images) == len(specs) == 48
    assert result.overall >= 0.85, result.as_dict()  # 0.958 measured (the 240-prompt score is 0.975)


@pytest.mark.skipif(not (DEMO_MODEL_DIR / "pipeline.json").is_file(), reason="no packaged demo model")
def test_prefix_curve_ends_at_the_tokenizer_ceiling():
    import numpy as np
    import torch
    from bitwise_ar.pipeline import to_pil
    from bitwise_ar.shapes import aggregate, eval_prompts, render, score_image
    from bitwise_ar.shapes.render import RenderConfig
    from bitwise_ar.train.demo import image_to_tensor, prefix_curve

    curve = prefix_curve(str(DEMO_MODEL_DIR), num_prompts=6, seed=2)
    pipe = InfinityPipeline.from_pretrained(DEMO_MODEL_DIR)
    assert [c["given_scales"] for c in curve] == list(range(pipe.layout_for().num_scales + 1))
    # All scales given: nothing is sampled, so the score is the tokenizer's reconstruction score, computed directly.
    specs = eval_prompts(6)
    rng = np.random.default_rng(2)
    truth = torch.stack([image_to_tensor(render(s, RenderConfig(image_size=64), rng)[0]) for s in specs])
    with torch.inference_mode():
        recon = pipe.tokenizer.decode(pipe.tokenizer.encode(truth))
    direct = aggregate([score_image(im, s) for im, s in zip(to_pil(recon), specs, strict=True)])
    assert curve[-1]["overall"] == direct.overall and curve[-1]["per_check"] == direct.per_check
    assert all(0.0 <= c["overall"] <= 1.0 for c in curve)
