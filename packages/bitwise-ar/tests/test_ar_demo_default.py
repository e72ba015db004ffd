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
