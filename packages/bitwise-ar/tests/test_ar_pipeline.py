"""Text encoder (tiny random T5 built offline), pipeline and CLI end to end, and bad-input errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch
from bitwise_ar.cli import DEMO_MODEL_DIR, main
from bitwise_ar.pipeline import InfinityPipeline
from bitwise_ar.testing import build_tiny_pipeline
from bitwise_ar.text_encoder import T5TextEncoder
from PIL import Image


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("pipe") / "model", seed=0)


@pytest.fixture(scope="module")
def pipe(pipeline_dir):
    return InfinityPipeline.from_pretrained(pipeline_dir)


def test_text_encoder_batches_truncates_and_releases(pipeline_dir):
    encoder = T5TextEncoder(pipeline_dir / "text_encoder", max_length=6)
    prompts = ["two red circles", "a blue square", "one green star to the left of a cat"]
    with pytest.warns(UserWarning, match="truncated"):
        batch = encoder.encode(prompts)
    assert batch.lengths == (4, 4, 6)  # words + </s>; the long prompt is cut to the limit
    assert batch.features_NC.dtype == torch.float32
    alone = encoder.encode(prompts[0])
    assert torch.allclose(alone.features_NC, batch.split()[0], atol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        encoder.encode(["ok", "  "])
    bf16 = T5TextEncoder(pipeline_dir / "text_encoder", dtype="bf16", release_after_encode=True)
    out = bf16.encode(prompts[:2])
    assert bf16._model is None  # released after encoding
    assert torch.allclose(out.features_NC, batch.features_NC[:8], atol=0.1)
    with pytest.raises(FileNotFoundError, match="text encoder directory"):
        T5TextEncoder(pipeline_dir / "nothing")


def test_pipeline_generates_rgb_images_and_previews(pipe):
    out = pipe(
        ["two red circles", "a blue square to the left of a green star"], image_size=(64, 96), seed=3, previews=True
    )
    assert [im.size for im in out.images] == [(96, 64), (96, 64)]
    assert all(im.mode == "RGB" for im in out.images)
    assert out.images_tensor.shape == (2, 3, 64, 96)
    assert len(out.previews) == len(out.schedule) and out.previews[0][0].size == (96, 64)
    again = pipe(["two red circles", "a blue square to the left of a green star"], image_size=(64, 96), seed=3)
    assert torch.equal(again.images_tensor, out.images_tensor)
    negative = pipe("two red circles", image_size=(64, 96), seed=3, negative_prompt="a blue square")
    assert not torch.equal(negative.images_tensor, out.images_tensor[:1])


def test_prefix_bits_fix_the_coarse_scales(pipe):
    prompts = ["two red circles", "a blue square"]
    full = pipe(prompts, image_size=(64, 64), seed=5)
    replay = pipe(prompts, image_size=(64, 64), seed=11, prefix_bits=full.bits)
    assert torch.equal(replay.images_tensor, full.images_tensor)  # every scale given: nothing is sampled
    varied = pipe(prompts, image_size=(64, 64), seed=11, prefix_bits=full.bits[:2])
    for k in range(2):
        assert torch.equal(varied.bits[k], full.bits[k])
    assert any(not torch.equal(a, b) for a, b in zip(varied.bits[2:], full.bits[2:]))
    recompute = pipe(prompts, image_size=(64, 64), seed=11, prefix_bits=full.bits[:2], use_cache=False)
    assert all(torch.equal(a, b) for a, b in zip(recompute.bits, varied.bits))
    with pytest.raises(ValueError, match=r"prefix_bits\[1\] has shape"):
        pipe(prompts, image_size=(64, 64), prefix_bits=[full.bits[0], full.bits[0]])
    with pytest.raises(ValueError, match="only"):
        pipe(prompts, image_size=(64, 64), prefix_bits=[*full.bits, full.bits[-1]])


def test_pipeline_resolutions_and_errors(pipe):
    layout = pipe.layout_for(aspect_ratio="16:9", resolution="0.06M")
    assert layout.schedule[-1] == (12, 21)  # the 0.571 template (h/w = 9/16 -> nearest 0.571): 192x336
    with pytest.raises(ValueError, match="resolution"):
        pipe.layout_for(resolution="2M")
    with pytest.raises(ValueError):
        pipe.layout_for(aspect_ratio="wide", resolution="0.06M")
    with pytest.raises(ValueError, match="multiple"):
        pipe.layout_for(image_size=(100, 64))
    from bitwise_ar.sampling import SamplingConfig

    for bad in (dict(cfg=-1.0), dict(tau=0.0), dict(top_p=1.5), dict(top_k=-2)):
        with pytest.raises(ValueError):
            SamplingConfig(**bad)
    with pytest.raises(ValueError, match="empty"):
        pipe("", image_size=(64, 64))


def test_mismatched_tokenizer_and_transformer_bits(pipe):
    from bsq_tokenizer import PRESETS, BSQTokenizer

    other = BSQTokenizer(PRESETS["debug"].__class__(**{**PRESETS["debug"].to_dict(), "codebook_dim": 8}))
    with pytest.raises(ValueError, match="bits per token must agree"):
        InfinityPipeline(pipe.transformer, other, pipe.text_encoder)


def test_cli_generate_end_to_end(pipeline_dir, tmp_path, capsys):
    out, strip = tmp_path / "out.png", tmp_path / "strip.png"
    code = main(
        [
            "generate",
            "two red circles to the left of a blue square",
            "--weights",
            str(pipeline_dir),
            "--image-size",
            "64x64",
            "--seed",
            "1",
            "-o",
            str(out),
            "--previews",
            str(strip),
            "--cfg",
            "3",
            "--tau",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    image = Image.open(out)
    assert image.mode == "RGB" and image.size == (64, 64)
    assert Image.open(strip).size[0] > 64


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--aspect-ratio", "banana"], "aspect"),
        (["--resolution", "3M"], "resolution"),
        (["--top-p", "2"], "top_p"),
        (["--cfg", "-3"], "cfg"),
        (["--tau", "0"], "tau"),
        (["--vae-tile", "0"], "tile_size"),
        (["--vae-tile", "4", "--vae-tile-overlap", "4"], "tile_overlap"),
        pytest.param(
            ["--attention-backend", "flash"],
            "pip install flash-attn",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed here"
            ),
        ),
    ],
)
def test_cli_bad_input_is_one_line(pipeline_dir, tmp_path, capsys, args, message):
    code = main(["generate", "a cat", "--weights", str(pipeline_dir), "-o", str(tmp_path / "x.png"), *args])
    err = capsys.readouterr().err
    assert code != 0 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_missing_weights(tmp_path, capsys):
    assert main(["generate", "a cat", "--weights", str(tmp_path / "none"), "-o", str(tmp_path / "x.png")]) == 1
    assert "not found" in capsys.readouterr().err
    if not (DEMO_MODEL_DIR / "transformer").is_dir():
        assert main(["generate", "a cat", "-o", str(tmp_path / "x.png")]) == 1
        assert "demo_model" in capsys.readouterr().err


def test_cli_convert_official(pipe, tmp_path, capsys):
    from bitwise_ar.model import InfinityTransformer
    from bitwise_ar.weights import to_official_state_dict

    official = tmp_path / "infinity_tiny.pth"
    torch.save(to_official_state_dict(pipe.transformer.state_dict(), block_chunks=2), official)
    assert main(["convert-official", str(official), "-o", str(tmp_path / "conv")]) == 0
    loaded = InfinityTransformer.from_pretrained(tmp_path / "conv")
    assert all(torch.equal(v, pipe.transformer.state_dict()[k]) for k, v in loaded.state_dict().items())
    capsys.readouterr()
    assert main(["convert-official", str(tmp_path / "missing.pth"), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bitwise-ar: error:") and "missing.pth" in err


def test_import_is_light():
    """``import bitwise_ar`` (and the model/sampling modules) pulls in no transformers/ray/mlflow."""
    code = (
        "import sys, bitwise_ar, bitwise_ar.model, bitwise_ar.sampling, bitwise_ar.pipeline, bitwise_ar.cli;"
        "print(sorted(m for m in ('transformers', 'ray', 'mlflow') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_low_memory_path(pipeline_dir):
    low = InfinityPipeline.from_pretrained(pipeline_dir, low_memory=True)
    assert low.transformer.blocks[0].ffn.fc1.weight.dtype == torch.bfloat16
    assert low.transformer.head.weight.dtype == torch.float32
    out = low("two red circles", image_size=(64, 64), seed=2)
    assert low.text_encoder._model is None  # T5 released after encoding
    assert out.images[0].size == (64, 64) and torch.isfinite(out.images_tensor).all()


def test_vae_tiled_decode_in_pipeline_and_cli(pipe, pipeline_dir, tmp_path, capsys):
    """A tile covering the latent is exactly the untiled decode; smaller tiles change only the decode (same bits),
    and ``--vae-tile`` reaches the pipeline through ``from_pretrained``."""
    import numpy as np

    prompt, size = "two red circles", (64, 96)  # latent 4 x 6
    plain = pipe(prompt, image_size=size, seed=1)

    def tiled(tile, overlap=None):
        p = InfinityPipeline(
            pipe.transformer,
            pipe.tokenizer,
            pipe.text_encoder,
            pipe.defaults,
            vae_tile_size=tile,
            vae_tile_overlap=overlap,
        )
        return p(prompt, image_size=size, seed=1)

    assert torch.equal(tiled(6).images_tensor, plain.images_tensor)
    small = tiled(3, 1)
    assert all(torch.equal(a, b) for a, b in zip(small.bits, plain.bits, strict=True))
    assert small.images_tensor.shape == plain.images_tensor.shape
    assert not torch.equal(small.images_tensor, plain.images_tensor)  # per-tile GroupNorm: approximate
    out = tmp_path / "tiled.png"
    code = main(
        [
            "generate",
            prompt,
            "--weights",
            str(pipeline_dir),
            "--image-size",
            "64x96",
            "--seed",
            "1",
            "-o",
            str(out),
            "--vae-tile",
            "3",
            "--vae-tile-overlap",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(small.images[0]))
    with pytest.raises(ValueError, match="tile_size"):
        InfinityPipeline(pipe.transformer, pipe.tokenizer, pipe.text_encoder, vae_tile_size=-1)


def test_every_template_and_resolution_has_a_layout(pipe):
    from bsq_tokenizer.schedules import RESOLUTIONS, TEMPLATES, get_image_size

    for template in TEMPLATES:
        for resolution in RESOLUTIONS:
            layout = pipe.layout_for(aspect_ratio=template, resolution=resolution)
            h, w = layout.schedule[-1]
            assert (16 * h, 16 * w) == tuple(get_image_size(template, resolution))
            assert layout.rope_reference == pipe.layout_for(aspect_ratio=template, resolution="1M").schedule[-1]
