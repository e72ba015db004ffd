"""Unit behaviour: bucketing rule, geometry filters, decode guards, hashes, configs, deterministic tars."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from infinity_data.config import config_from_dict, load_config
from infinity_data.decode import DecodeConfig, DecodeError, decode_rgb, normalized_bytes, probe
from infinity_data.filters.geometry import AspectRatioConfig, ResolutionConfig, crop_loss, template_of
from infinity_data.hashing import NearDuplicateIndex, dhash, hamming, phash
from infinity_data.shards import KeptSample, read_tar_samples, write_tar
from infinity_data.testing import clean_image
from infinity_run.config import apply_overrides
from PIL import Image

# The official template keys in dictionary order (FoundationVision/Infinity dynamic_resolution.py).
OFFICIAL_ORDER = [1.0, 1.25, 0.8, 1.333, 0.75, 1.5, 0.666, 1.75, 0.571, 2.0, 0.5, 2.5, 0.4, 3.0, 0.333]


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_template_rule_matches_official_argmin_on_random_sizes():
    rng = np.random.default_rng(0)
    heights = rng.integers(16, 4000, size=100_000)
    widths = rng.integers(16, 4000, size=100_000)
    templates = np.array(OFFICIAL_ORDER)
    official = templates[np.argmin(np.abs(heights[:, None] / widths[:, None] - templates[None]), axis=1)]
    ours = np.array([template_of(int(h), int(w)) for h, w in zip(heights, widths)])
    assert np.array_equal(ours, official)
    # exact ties go to the earlier key: 1.125 is equidistant from 1.0 and 1.25
    assert template_of(1125, 1000) == 1.0


def test_resolution_and_aspect_filters():
    res = ResolutionConfig(pn="0.25M")
    assert res.reason(512, 512) is None
    assert res.reason(511, 511) == "too_small"  # template 1.0 needs 512 x 512
    assert res.reason(460, 575) is None  # h/w 0.8 -> template 0.8 needs 448 x 560
    assert res.reason(768, 512) is None  # template 1.5 at 0.25M is 624 x 416 (39 x 26 tokens)
    assert ResolutionConfig(pn="0.25M", max_upscale=1.1).reason(480, 480) is None
    aspect = AspectRatioConfig()
    assert crop_loss(1000, 1000) == 0.0
    assert aspect.reason(300, 1000) is None  # h/w 0.3 -> template 0.333, loss 10%
    assert aspect.reason(260, 1400) == "crop_loss"
    assert AspectRatioConfig(max_h_div_w=2.0).reason(2100, 1000) == "out_of_range"
    with pytest.raises(ValueError, match=r"resolution preset"):
        ResolutionConfig(pn="2M")


def test_decode_guards_classify_failures():
    rng = np.random.default_rng(1)
    good = _jpeg(clean_image(rng, 64, 48))
    assert probe(good).width == 64 and probe(good).height == 48
    with pytest.raises(DecodeError) as err:
        probe(b"")
    assert err.value.kind == "empty"
    with pytest.raises(DecodeError) as err:
        probe(b"GIF89a-not-really" * 4)
    assert err.value.kind == "corrupt"
    with pytest.raises(DecodeError) as err:
        probe(good[: len(good) // 2])
    assert err.value.kind == "truncated"
    png = _png(clean_image(rng, 40, 30))
    with pytest.raises(DecodeError) as err:
        probe(png[:-20])
    assert err.value.kind == "truncated"
    with pytest.raises(DecodeError) as err:
        probe(good, DecodeConfig(max_pixels=1000))
    assert err.value.kind == "decompression_bomb"
    # A PNG whose header claims 40000 x 40000 pixels is refused from the header, without decoding anything.
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    bomb = png[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + png[33:]
    with pytest.raises(DecodeError) as err:
        probe(bomb)
    assert err.value.kind == "decompression_bomb"


def test_modes_and_exif_rotation_are_normalised():
    rng = np.random.default_rng(2)
    image = clean_image(rng, 80, 40)
    plain = _jpeg(image)
    stored, ext, reencoded = normalized_bytes(plain, probe(plain))
    assert stored is plain and ext == "jpg" and not reencoded  # passthrough: no re-encode

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    rotated = _jpeg(image, exif=exif.tobytes())
    info = probe(rotated)
    assert (info.width, info.height) == (40, 80)
    stored, _, reencoded = normalized_bytes(rotated, info)
    assert reencoded and Image.open(io.BytesIO(stored)).size == (40, 80)

    cmyk = _jpeg(image.convert("CMYK"))
    rgb = decode_rgb(cmyk)
    assert rgb.mode == "RGB" and np.abs(np.asarray(rgb, dtype=float) - np.asarray(image, dtype=float)).mean() < 12
    assert normalized_bytes(cmyk, probe(cmyk))[2]

    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert decode_rgb(_png(rgba)).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white background
    stored, ext, reencoded = normalized_bytes(_png(rgba), probe(_png(rgba)))
    assert ext == "png" and reencoded and Image.open(io.BytesIO(stored)).mode == "RGB"

    grey16 = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    assert [decode_rgb(_png(grey16)).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_perceptual_hashes():
    rng = np.random.default_rng(3)
    a, b = clean_image(rng, 300, 200), clean_image(rng, 300, 200)
    recompressed = Image.open(io.BytesIO(_jpeg(a, subsampling=2))).resize((210, 140))
    assert phash(a) == phash(a.copy())
    assert hamming(phash(a), phash(recompressed)) <= 4
    assert hamming(dhash(a), dhash(recompressed)) <= 6
    assert hamming(phash(a), phash(b)) > 12
    # Our DCT equals scipy's orthonormal DCT-II (independent implementation).
    fft = pytest.importorskip("scipy.fft")
    grey = np.asarray(a.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = fft.dctn(grey, type=2, norm="ortho")[:8, :8]
    bits = (low > np.median(low)).reshape(-1)
    assert phash(a) == int("".join("1" if x else "0" for x in bits), 2)


def test_near_duplicate_index_equals_brute_force():
    rng = np.random.default_rng(4)
    stored = [int(x) for x in rng.integers(0, 2**63, size=300, dtype=np.int64)]
    index = NearDuplicateIndex(radius=6)
    for value in stored:
        index.add(value)
    queries = [stored[i] ^ (1 << int(rng.integers(0, 64))) ^ (1 << int(rng.integers(0, 64))) for i in range(50)]
    queries += [int(x) for x in rng.integers(0, 2**63, size=50, dtype=np.int64)]
    for q in queries:
        brute = any(hamming(q, s) <= 6 for s in stored)
        assert (index.find(q) is not None) == brute


def test_config_overrides_and_errors(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[input]\npaths = ["/data"]\n[output]\npath = "/out"\n[filters]\nenabled = ["resolution"]\n')
    config = load_config(path, ["filters.resolution.pn=0.06M", 'filters.enabled=["resolution","ocr"]', "executor=local"])
    assert config.filters.resolution.pn == "0.06M" and config.filters.ordered == ("resolution", "ocr")
    assert config.executor == "local" and config.input.paths == ("/data",)
    with pytest.raises(ValueError, match=r"unknown filter name\(s\) \['nsfw'\].*known filters"):
        load_config(path, ['filters.enabled=["nsfw"]'])
    with pytest.raises(ValueError, match=r"override 'filters.ocr.max_area=0.1': unknown key 'max_area' in filters.ocr"):
        load_config(path, ["filters.ocr.max_area=0.1"])
    with pytest.raises(ValueError, match=r"raw 1-10 scale"):
        load_config(path, ["filters.aesthetic.min_score=50"])
    with pytest.raises(FileNotFoundError, match=r"missing.toml"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match=r"section.key=value"):
        apply_overrides({}, ["no-equals-sign"])
    with pytest.raises(ValueError, match=r"input.paths is empty"):
        config_from_dict({"input": {}, "output": {"path": "/o"}})


def test_tar_writer_is_deterministic_and_sorted(tmp_path):
    samples = [
        KeptSample(key=k, image=bytes([i]) * 10, image_ext="jpg", caption=f"c{k}", metadata={"k": k})
        for i, k in enumerate(["b-1", "a", "b"])
    ]
    write_tar(tmp_path / "x.tar", samples)
    write_tar(tmp_path / "y.tar", list(reversed(samples)))
    assert (tmp_path / "x.tar").read_bytes() == (tmp_path / "y.tar").read_bytes()
    got = dict(read_tar_samples(tmp_path / "x.tar"))
    assert list(got) == ["a", "b-1", "b"] and got["b"]["txt"] == b"cb"
