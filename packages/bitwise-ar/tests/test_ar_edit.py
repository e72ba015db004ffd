"""Image editing by partial-scale conditioning (in-painting, out-painting, variations) on a tiny random pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bitwise_ar import scale_step
from bitwise_ar.config import PRESETS
from bitwise_ar.editing import outpaint_canvas, read_mask, token_masks
from bitwise_ar.layout import ScaleLayout
from bitwise_ar.pipeline import InfinityPipeline
from bitwise_ar.sampling import SamplingConfig, sample
from bitwise_ar.testing import build_tiny_pipeline, random_text, tiny_transformer
from bsq_tokenizer.images import to_image_batch
from PIL import Image

SIZE = (64, 64)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return InfinityPipeline.from_pretrained(build_tiny_pipeline(tmp_path_factory.mktemp("pipe") / "model", seed=0))


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8))


def box_mask(top: int, left: int, bottom: int, right: int, size=SIZE) -> np.ndarray:
    mask = np.zeros(size, dtype=np.uint8)
    mask[top:bottom, left:right] = 255
    return mask


def test_empty_mask_keeps_the_source_bits_at_every_scale(pipe, source):
    out = pipe.edit(source, "a red circle", mask=np.zeros(SIZE, np.uint8), seed=1)
    assert len(out.bits) == len(out.source_bits) == len(out.schedule)
    for k, (bits, given) in enumerate(zip(out.bits, out.source_bits, strict=True)):
        assert torch.equal(bits, given.to(bits.dtype)), f"scale {k} changed under an empty mask"
    # the decoded edit is the tokenizer's reconstruction of the source
    assert torch.allclose(out.images_tensor, pipe.tokenizer.reconstruct(source), atol=1e-5)


def test_full_mask_equals_generation_with_the_same_seed(pipe, source):
    out = pipe.edit(source, "two blue squares", mask=np.ones(SIZE, np.uint8), seed=7)
    plain = pipe("two blue squares", image_size=SIZE, seed=7)
    for bits, want in zip(out.bits, plain.bits, strict=True):
        assert torch.equal(bits, want)
    assert torch.equal(out.images_tensor, plain.images_tensor)


@pytest.mark.parametrize("use_cache", [True, False])
def test_bits_outside_the_mask_are_the_source_bits(pipe, source, use_cache):
    mask = box_mask(8, 20, 40, 56)
    seen = []
    out = pipe.edit(source, "a green star", mask=mask, seed=3, previews=True, callback=seen.append,
                    use_cache=use_cache, mask_threshold=0.5)
    assert [s.index for s in seen] == list(range(len(out.schedule))) and len(out.previews) == len(out.schedule)
    redrawn_somewhere = False
    for k, (bits, given, keep) in enumerate(zip(out.bits, out.source_bits, out.keep_masks, strict=True)):
        assert keep.shape == (1, *out.schedule[k])
        assert torch.equal(bits[keep], given.to(bits.dtype)[keep]), f"scale {k}: kept tokens differ from the source"
        redrawn_somewhere |= bool((bits[~keep] != given.to(bits.dtype)[~keep]).any())
    assert redrawn_somewhere  # the masked tokens were sampled, not copied
    assert out.keep_masks[0].item()  # the 1x1 scale: 32x36 of 64x64 px masked = 28 % < 50 %, kept


def test_token_masks_follow_the_area_threshold():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:, :4] = True  # the left half
    half = token_masks(mask, [(1, 1), (2, 2), (4, 4)], threshold=0.5)
    assert half[0].item()  # 50 % of the single token: redrawn at threshold 0.5
    assert half[1].tolist() == [[True, False], [True, False]]
    assert not token_masks(mask, [(1, 1)], threshold=0.6)[0].item()
    mask[:, :5] = True  # columns 0-4: the 4x4 grid's third column is half covered
    assert token_masks(mask, [(4, 4)], 0.5)[0][:, 2].all() and not token_masks(mask, [(4, 4)], 0.5)[0][:, 3].any()
    corner = torch.zeros(8, 8, dtype=torch.bool)
    corner[:3, :3] = True  # 9 of 64 px = 14 % of the 1x1 token: redrawn at the default 0.1, kept at 0.25
    assert token_masks(corner, [(1, 1)])[0].item() and not token_masks(corner, [(1, 1)], 0.25)[0].item()
    with pytest.raises(ValueError, match="threshold"):
        token_masks(mask, [(1, 1)], threshold=0.0)


def test_variation_keeps_the_first_scales(pipe, source):
    out = pipe.edit(source, "a red circle", mode="variation", keep_scales=2, seed=5)
    for bits, given in zip(out.bits[:2], out.source_bits[:2], strict=True):
        assert torch.equal(bits, given.to(bits.dtype))
    assert not all(torch.equal(b, g.to(b.dtype)) for b, g in zip(out.bits[2:], out.source_bits[2:], strict=True))
    with pytest.raises(ValueError, match="keep_scales must be in"):
        pipe.edit(source, "a red circle", mode="variation", keep_scales=99)


def test_outpainting_places_the_original(pipe, source):
    out = pipe.edit(source, "a red circle", mode="outpaint", canvas_size=(64, 128), offset=(0, 64), seed=2)
    assert out.images[0].size == (128, 64)
    assert out.redraw_mask[:, :64].all() and not out.redraw_mask[:, 64:].any()
    assert torch.equal(out.source[..., 64:], pipe_source_tensor(source))
    # tokens over the original keep its bits (encoded in the canvas)
    for keep, bits, given in zip(out.keep_masks, out.bits, out.source_bits, strict=True):
        assert torch.equal(bits[keep], given.to(bits.dtype)[keep])
    finest = out.keep_masks[-1][0]  # the finest grid divides the canvas: exactly the right half is the original
    half = finest.shape[1] // 2
    assert finest[:, half:].all() and not finest[:, :half].any()
    assert not out.keep_masks[0].item()  # the 1x1 scale is half new: redrawn at the 0.5 threshold
    centred, redraw = outpaint_canvas(pipe_source_tensor(source), (128, 128))
    assert torch.equal(centred[..., 32:96, 32:96], pipe_source_tensor(source)) and redraw.sum() == 128 * 128 - 64 * 64


def pipe_source_tensor(source: Image.Image) -> torch.Tensor:
    return to_image_batch(source)


@pytest.mark.slow  # three small inductor compiles: ~1 min on 2 busy CPU cores
def test_compiled_step_takes_the_keep_mask():
    """The keep-mask is a tensor input of the static-shape step: compiled, kept tokens are the source's bits and the
    rest equal the eager edit (greedy bits, so no rounding ties). Depth 1 and two scales keep the compile small."""
    model = tiny_transformer(PRESETS["debug"].replace(depth=1), seed=3)
    layout = ScaleLayout.build([(1, 1), (2, 2)])
    text = random_text([4], model.config.text_channels, seed=1)
    gen = torch.Generator().manual_seed(0)
    source_bits = [torch.randint(0, 2, (1, h, w, model.config.codebook_dim), generator=gen, dtype=torch.uint8)
                   for h, w in layout.schedule]
    keeps = [torch.tensor([[[False]]]), torch.tensor([[[True, False], [False, True]]])]
    runs = {}
    for mode in ("off", "on"):
        with torch.inference_mode():
            runs[mode] = sample(model, text, layout, SamplingConfig(cfg=3.0, tau=1.0, top_k=1, compile=mode),
                                source_bits=source_bits, keep_masks=keeps)
    assert scale_step.compiled_steps(model, torch.device("cpu")).failure is None
    for bits_c, bits_e, given, keep in zip(runs["on"].bits, runs["off"].bits, source_bits, keeps, strict=True):
        assert torch.equal(bits_c[keep], given[keep])
        assert torch.equal(bits_c, bits_e)


def test_bad_inputs_get_clear_errors(pipe, source):
    with pytest.raises(ValueError, match=r"mask is 32x32 .* image is 64x64"):
        pipe.edit(source, "a red circle", mask=np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="binary"):
        pipe.edit(source, "a red circle", mask=np.full(SIZE, 128, np.uint8))
    with pytest.raises(ValueError, match="binary"):
        read_mask(np.full(SIZE, 0.5), SIZE)
    with pytest.raises(ValueError, match="one channel"):
        read_mask(np.zeros((*SIZE, 3)), SIZE)
    with pytest.raises(ValueError, match="empty"):
        pipe.edit(Image.new("RGB", (0, 0)), "a red circle", mask=np.zeros((0, 0)))
    with pytest.raises(ValueError, match="needs a mask"):
        pipe.edit(source, "a red circle")
    with pytest.raises(ValueError, match="multiple of the token stride"):
        pipe.edit(source.crop((0, 0, 60, 64)), "a red circle", mask=np.zeros((64, 60), np.uint8))
    with pytest.raises(ValueError, match="smaller than the image"):
        pipe.edit(source, "a red circle", mode="outpaint", canvas_size=(32, 128))
    with pytest.raises(ValueError, match="outside the"):
        pipe.edit(source, "a red circle", mode="outpaint", canvas_size=(64, 128), offset=(0, 80))
    with pytest.raises(ValueError, match="mode must be one of"):
        pipe.edit(source, "a red circle", mode="erase", mask=np.zeros(SIZE))
    assert read_mask(Image.fromarray(box_mask(0, 0, 8, 8)), SIZE).sum() == 64


def test_cli_edit_errors_are_one_line(tmp_path, capsys, pipe, source):
    from bitwise_ar.cli import main

    model_dir = tmp_path / "model"
    pipe.save_pretrained(model_dir)
    source.save(tmp_path / "in.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "small_mask.png")
    (tmp_path / "not_an_image.png").write_text("hello")
    base = ["edit", str(tmp_path / "in.png"), "a red circle", "--weights", str(model_dir)]
    assert main([*base, "--mask", str(tmp_path / "small_mask.png")]) == 1
    assert "the mask is 32x32" in capsys.readouterr().err
    assert main([*base, "--mask", str(tmp_path / "not_an_image.png")]) == 1
    assert "cannot read image file" in capsys.readouterr().err
    assert main([*base]) == 1
    assert "needs a mask" in capsys.readouterr().err
    assert main([*base, "--mode", "variation", "-o", str(tmp_path / "v.png")]) == 0
    assert Image.open(tmp_path / "v.png").size == SIZE
