"""The packed bit file format: lossless round trip, exact size, and clear errors for damaged files."""

from __future__ import annotations

import math

import pytest
import torch
from bsq_tokenizer import EncodedImages
from bsq_tokenizer.bitfile import MAGIC, load_codes, pack_codes, save_codes, unpack_codes
from bsq_tokenizer.schedules import schedule_for_latent


def _codes(batch=2, d=13, latent=(5, 7), image=(70, 100), lfq=False, patchify=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    sched = schedule_for_latent(*latent)
    bits = [torch.randint(0, 2, (batch, h, w, d), generator=g, dtype=torch.uint8) for h, w in sched]
    return EncodedImages(
        bits=bits,
        schedule=sched,
        image_size=image,
        patch_size=16,
        code_scale=1.0 if lfq else 1 / math.sqrt(d),
        spatial_patchify=patchify,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"batch": 1, "d": 64},
        {"d": 1, "latent": (1, 1), "image": (3, 5)},
        {"lfq": True, "patchify": True, "latent": (4, 6)},
        {"batch": 3, "d": 7},
    ],
)
def test_round_trip_is_lossless_and_compact(kwargs):
    codes = _codes(**kwargs)
    data = pack_codes(codes)
    payload = math.ceil(codes.batch_size * codes.num_bits / 8)
    header = 22 + 4 * codes.num_scales + 8 + 4
    assert len(data) == payload + header
    back = unpack_codes(data)
    assert back.schedule == codes.schedule and back.image_size == codes.image_size
    assert back.code_scale == pytest.approx(codes.code_scale) and back.spatial_patchify == codes.spatial_patchify
    assert back.patch_size == codes.patch_size
    for a, b in zip(codes.bits, back.bits):
        assert a.dtype == b.dtype == torch.uint8 and torch.equal(a, b)


def test_bit_layout_is_documented_order():
    """First payload bit = image 0, scale 1, token (0, 0), bit 0; packed MSB first."""
    bits = [torch.zeros(1, 1, 1, 8, dtype=torch.uint8), torch.zeros(1, 2, 2, 8, dtype=torch.uint8)]
    bits[0][0, 0, 0, 0] = 1  # -> 0b10000000
    bits[1][0, 0, 1, 7] = 1  # scale 2, token 1 (row 0, col 1), bit 7 -> byte 1 + 1, lowest bit
    codes = EncodedImages(bits=bits, schedule=[(1, 1), (2, 2)], image_size=(32, 32), patch_size=16, code_scale=8**-0.5)
    data = pack_codes(codes)
    payload = data[22 + 8 + 8 : -4]
    assert payload[0] == 0b10000000 and payload[2] == 0b00000001 and sum(payload) == 0b10000001 + 0


def test_file_round_trip_and_errors(tmp_path):
    codes = _codes()
    path = tmp_path / "x.bsqb"
    size = save_codes(codes, path)
    assert path.stat().st_size == size and path.read_bytes()[:4] == MAGIC
    assert all(torch.equal(a, b) for a, b in zip(load_codes(path).bits, codes.bits))
    data = path.read_bytes()
    cases = {
        "short": (data[:10], "truncated"),
        "truncated": (data[:-7], "truncated"),
        "header_only": (data[:40], "truncated"),
        "trailing": (data + b"\0", "trailing"),
        "magic": (b"JUNK" + data[4:], "magic"),
        "version": (data[:4] + b"\x09" + data[5:], "version"),
        "flipped": (data[:60] + bytes([data[60] ^ 1]) + data[61:], "checksum"),
        "empty": (b"", "truncated"),
    }
    for name, (blob, message) in cases.items():
        bad = tmp_path / f"{name}.bsqb"
        bad.write_bytes(blob)
        with pytest.raises(ValueError, match=message):
            load_codes(bad)
    with pytest.raises(FileNotFoundError):
        load_codes(tmp_path / "missing.bsqb")
