"""The BSQTokenizer API on tiny random models: any size, any input type, determinism, dtype, saving and loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from bsq_tokenizer import PRESETS, BSQTokenizer, CheckpointMismatchError, EncodedImages, TokenizerConfig
from bsq_tokenizer.autoencoder import SUBPIXEL_MIN_AREA, Upsample, subpixel_upsample_conv
from bsq_tokenizer.multiscale import multiscale_quantize
from bsq_tokenizer.official import infer_config, suggest_preset
from bsq_tokenizer.schedules import get_scale_schedule
from PIL import Image


def _images(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


@pytest.mark.parametrize("hw", [(17, 23), (32, 48), (64, 16), (1, 1), (50, 130)])
def test_any_size_round_trips_with_same_shape(tiny_model, hw):
    x = _images(2, *hw)
    codes = tiny_model.encode(x)
    latent = (-(-hw[0] // 16), -(-hw[1] // 16))
    assert codes.image_size == hw and codes.latent_size == latent
    assert codes.schedule[0] == (1, 1) and codes.schedule[-1] == latent
    assert all(b.shape == (2, h, w, 8) and b.dtype == torch.uint8 for b, (h, w) in zip(codes.bits, codes.schedule))
    recon = tiny_model.decode(codes)
    assert recon.shape == x.shape and recon.abs().max() <= 1.0
    assert codes.num_bits == sum(h * w for h, w in codes.schedule) * 8
    assert codes.bpp == pytest.approx(codes.num_bits / (hw[0] * hw[1]))


def test_official_256_image_uses_official_schedule_and_bpp(tiny_model):
    codes = tiny_model.encode(_images(1, 256, 256))
    assert list(codes.schedule) == get_scale_schedule(1.0, "0.06M")
    assert codes.num_bits == 521 * 8
    # d = 32 at 256^2 is 0.2544 bpp (reference appendix A): here d = 8, a quarter of it
    assert codes.bpp == pytest.approx(0.2544 / 4, abs=1e-4)


def test_encode_is_deterministic_and_batch_independent(tiny_model):
    x = _images(3, 40, 56, seed=1)
    a, b = tiny_model.encode(x), tiny_model.encode(x)
    assert all(torch.equal(p, q) for p, q in zip(a.bits, b.bits))
    single = tiny_model.encode(x[1:2])
    assert all(torch.equal(p[1:2], q) for p, q in zip(a.bits, single.bits))
    assert torch.equal(tiny_model.decode(a), tiny_model.decode(b))


def test_tensor_numpy_pil_inputs_agree(tiny_model):
    g = torch.Generator().manual_seed(2)
    u8 = torch.randint(0, 256, (33, 47, 3), generator=g, dtype=torch.uint8)
    as_float = u8.permute(2, 0, 1).float() / 127.5 - 1
    inputs = [
        u8.permute(2, 0, 1),
        as_float,
        u8.numpy(),
        u8.numpy().astype(np.float32) / 255.0,
        Image.fromarray(u8.numpy()),
        [Image.fromarray(u8.numpy())],
    ]
    reference = tiny_model.encode(as_float)
    for item in inputs:
        codes = tiny_model.encode(item)
        assert codes.image_size == (33, 47)
        assert all(torch.equal(p, q) for p, q in zip(codes.bits, reference.bits)), type(item)
    ranged = tiny_model.encode(as_float * 0.5 + 0.5, value_range=(0.0, 1.0))
    assert all(torch.equal(p, q) for p, q in zip(ranged.bits, reference.bits))


def test_wrong_inputs_give_clear_errors(tiny_model):
    with pytest.raises(ValueError, match="channels"):
        tiny_model.encode(torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match="channels"):
        tiny_model.encode(np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match="channels"):
        tiny_model.encode(np.zeros((16, 16, 4), np.uint8))
    with pytest.raises(ValueError, match="share a size"):
        tiny_model.encode([np.zeros((16, 16, 3), np.uint8), np.zeros((32, 16, 3), np.uint8)])
    with pytest.raises(ValueError, match="load_image"):
        tiny_model.encode("photo.jpg")
    with pytest.raises(ValueError, match="multiple of the stride"):
        tiny_model.encode_features(torch.zeros(1, 3, 20, 16))
    with pytest.raises(ValueError, match="last scale"):
        tiny_model.encode(torch.zeros(1, 3, 32, 32), schedule=[(1, 1), (3, 3)])


def test_progressive_decode_and_encoded_images_helpers(tiny_model):
    codes = tiny_model.encode(_images(2, 64, 64))
    k = codes.num_scales
    previews = [tiny_model.decode(codes, upto_scale=s) for s in range(1, k + 1)]
    assert all(p.shape == (2, 3, 64, 64) for p in previews)
    assert torch.equal(previews[-1], tiny_model.decode(codes))
    assert not torch.equal(previews[0], previews[-1])
    with pytest.raises(ValueError, match="upto_scale"):
        tiny_model.decode(codes, upto_scale=k + 1)
    # summed codes == features' quantisation; transformer inputs cover scales 2..K
    feats = tiny_model.encode_features(_images(2, 64, 64))
    _, summed = multiscale_quantize(feats, codes.schedule)
    assert torch.allclose(codes.summed_codes(), summed)
    assert codes.transformer_inputs().shape == (2, sum(h * w for h, w in codes.schedule[1:]), 8)
    one = codes.select(1)
    assert one.batch_size == 1 and torch.equal(one.bits[-1][0], codes.bits[-1][1])
    assert EncodedImages.unpack(codes.pack()).bits[-1].equal(codes.bits[-1])
    idx = codes.to_indices()
    assert idx[-1].shape == (2, 4, 4) and int(idx[-1].max()) < 2**8


def test_dtype_and_device_follow_the_model(tiny_config):
    torch.manual_seed(0)
    model = BSQTokenizer(tiny_config).to(torch.float64).eval()
    x = _images(1, 32, 32)
    feats = model.encode_features(x)
    assert feats.dtype == torch.float64
    codes = model.encode(x)
    assert model.decode(codes).dtype == torch.float64
    bf16 = BSQTokenizer(tiny_config).to(torch.bfloat16).eval()
    assert bf16.decode(bf16.encode(x)).dtype == torch.bfloat16


def test_save_and_load_pretrained(tiny_model, tmp_path):
    out = tiny_model.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded = BSQTokenizer.from_pretrained(out)
    assert loaded.config == tiny_model.config
    for (k, a), b in zip(tiny_model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    x = _images(1, 48, 48)
    assert torch.equal(loaded.reconstruct(x), tiny_model.reconstruct(x))
    # errors: missing directory / files, corrupt config
    with pytest.raises(FileNotFoundError, match="convert-official"):
        BSQTokenizer.from_pretrained(tmp_path / "nope")
    (out / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BSQTokenizer.from_pretrained(out)
    (out / "config.json").write_text(
        json.dumps({"format": "bsq-tokenizer/1", "config": {"codebook_dim": 8, "bogus": 1}})
    )
    with pytest.raises(ValueError, match="bogus"):
        BSQTokenizer.from_pretrained(out)
    (out / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        BSQTokenizer.from_pretrained(out)


def _official_layout(model: BSQTokenizer) -> dict[str, torch.Tensor]:
    d = model.config.codebook_dim
    mask = 2 ** torch.arange(d - 1, -1, -1, dtype=torch.int64)
    return {**model.state_dict(), "quantizer.lfq.mask": mask, "quantize.lfq.mask": mask.clone()}


def test_from_official_round_trip_and_inference(tiny_model, official_like_model, tmp_path):
    state = _official_layout(tiny_model)
    path = tmp_path / "official.pth"
    torch.save({"vae": state, "optimizer": {}}, path)
    for source in (path, state, {"ema": state}):
        loaded = BSQTokenizer.from_official(source, tiny_model.config)
        assert all(torch.equal(a, b) for a, b in zip(tiny_model.state_dict().values(), loaded.state_dict().values()))
    # GroupNorm groups are not in the weights: only official-compatible widths can be inferred
    with pytest.raises(CheckpointMismatchError, match="GroupNorm"):
        BSQTokenizer.from_official(state)
    official = _official_layout(official_like_model)
    inferred = infer_config(official)
    assert inferred.replace(description="") == official_like_model.config.replace(description="")
    x = _images(1, 32, 48)
    assert torch.equal(BSQTokenizer.from_official(official).reconstruct(x), official_like_model.reconstruct(x))


def test_from_official_strict_errors(tiny_model, tmp_path):
    state = _official_layout(tiny_model)
    missing = {k: v for k, v in state.items() if k != "decoder.conv_out.conv.bias"}
    with pytest.raises(CheckpointMismatchError, match=r"1 missing key\(s\): decoder.conv_out.conv.bias"):
        BSQTokenizer.from_official(missing, tiny_model.config)
    extra = {**state, "encoder.extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointMismatchError, match=r"unexpected key\(s\): encoder.extra.weight"):
        BSQTokenizer.from_official(extra, tiny_model.config)
    # a checkpoint of a different architecture: same keys, other d
    other = tiny_model.config.replace(codebook_dim=4)
    with pytest.raises(CheckpointMismatchError, match=r"different architecture.*codebook_dim=8.*shape mismatch"):
        BSQTokenizer.from_official(state, other)
    with pytest.raises(FileNotFoundError, match="infinity_vae"):
        BSQTokenizer.from_official(tmp_path / "missing.pth", "d32")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        BSQTokenizer.from_official(tmp_path / "junk.pth", "d32")
    with pytest.raises(ValueError, match="unknown preset"):
        BSQTokenizer.from_official(state, "d33")


def test_presets_shapes_match_official_key_lists(shared_dir):
    """The released-architecture presets have exactly the official keys and shapes (meta device: no memory)."""
    for preset, name in (("d32reg", "infinity_vae_d32reg_keys.txt"), ("d16", "infinity_vae_d16_keys.txt")):
        expected = {}
        for line in (shared_dir / "reference" / "official_keys" / name).read_text().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            key, rest = line.split(" ", 1)
            expected[key] = tuple(int(s) for s in rest.split(")")[0].strip("( ").split(",") if s.strip())
        with torch.device("meta"):
            model = BSQTokenizer(PRESETS[preset])
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        masks = {k for k in expected if k.endswith("lfq.mask")}
        assert ours == {k: v for k, v in expected.items() if k not in masks}
        assert suggest_preset(model.config) in {preset, "d32"}
        enc = sum(p.numel() for p in model.encoder.parameters())
        dec = sum(p.numel() for p in model.decoder.parameters())
        if preset == "d32reg":
            assert (enc, dec) == (45_025_696, 65_092_355)


def test_patchify_preset_schedule():
    cfg = PRESETS["d14-f8-patchify"]
    assert cfg.token_dim == 56 and cfg.pad_multiple == 16 and cfg.patch_size == 8
    with torch.device("meta"):
        model = BSQTokenizer(cfg)
    sched = model.default_schedule(32, 32)  # a 256x256 image: 32x32 latent, 16x16 transformer grid
    assert sched == [(2 * h, 2 * w) for h, w in get_scale_schedule(1.0, "0.06M")]


def test_tiny_patchify_model_end_to_end():
    torch.manual_seed(0)
    cfg = TokenizerConfig(
        codebook_dim=4,
        base_channels=8,
        channel_multipliers=(1, 1, 2, 2),
        num_res_blocks=1,
        patch_size=8,
        spatial_patchify=True,
        norm_groups=4,
    )
    model = BSQTokenizer(cfg).eval()
    x = _images(1, 40, 72)  # padded to 48 x 80 (multiple of 16): latent 6 x 10, transformer grid 3 x 5
    codes = model.encode(x)
    assert codes.latent_size == (6, 10) and codes.transformer_schedule[-1] == (3, 5)
    assert all(h % 2 == 0 and w % 2 == 0 for h, w in codes.schedule)
    labels = codes.transformer_labels()
    assert labels.shape == (1, sum(h * w for h, w in codes.transformer_schedule), 16)
    assert codes.transformer_inputs().shape == (1, labels.shape[1] - 1, 16)
    assert model.decode(codes).shape == x.shape
    back = EncodedImages.unpack(codes.pack())
    assert back.spatial_patchify and torch.equal(back.transformer_labels(), labels)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_subpixel_upsample_conv_equals_upsample_then_conv(memory_format):
    """The inference upsample (four folded 2x2 convs on the low-res input) is nearest-x2 + 3x3 conv up to rounding,
    including the zero-padded borders; the Upsample module takes it without autograd on inputs of >= 32x32."""
    torch.manual_seed(0)
    up = Upsample(8)
    x = torch.randn(2, 8, 32, 40).contiguous(memory_format=memory_format)
    assert x.shape[-2] * x.shape[-1] >= SUBPIXEL_MIN_AREA
    with torch.no_grad():
        plain = up.conv(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))
        folded = subpixel_upsample_conv(x, up.conv.conv)
        module = up(x)
    assert folded.shape == plain.shape == (2, 8, 64, 80)
    assert folded.is_contiguous(memory_format=memory_format)
    assert torch.allclose(folded, plain, atol=1e-5, rtol=0) and not torch.equal(folded, x.new_zeros(folded.shape))
    assert torch.equal(module, folded)
    assert torch.allclose(up(x), plain, atol=1e-5)  # autograd on: the plain path
