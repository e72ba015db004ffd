"""The packed bit file format: lossless round trip, exact size, clear errors for damaged files, the tokenizer record
(config + weights fingerprint) and reading version-1 files."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
import torch
from bsq_tokenizer import BSQTokenizer, EncodedImages
from bsq_tokenizer.bitfile import MAGIC, VERSION, load_codes, pack_codes, save_codes, unpack_codes
from bsq_tokenizer.model import WeightsMismatchError
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
    header = 22 + 4 * codes.num_scales + 4 + len(b"{}") + 8 + 4  # codes made by hand: an empty tokenizer record
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
    payload = data[22 + 8 + 4 + 2 + 8 : -4]
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


def _version1_file(codes: EncodedImages) -> bytes:
    """A file in format version 1 (what the code before version 2 wrote), built from that version's spec: fixed header
    ``<4sBBBBHIII``, K (h, w) uint16 pairs, uint64 payload length, MSB-first packed bits, CRC-32 of all before."""
    d, k, batch = codes.codebook_dim, codes.num_scales, codes.batch_size
    flags = (1 if codes.code_scale == 1.0 else 0) | (2 if codes.spatial_patchify else 0)
    header = struct.pack("<4sBBBBHIII", b"BSQB", 1, flags, d, k, codes.patch_size, batch, *codes.image_size)
    header += b"".join(struct.pack("<HH", h, w) for h, w in codes.schedule)
    stream = np.concatenate([b.reshape(batch, -1).numpy() for b in codes.bits], axis=1).reshape(-1)
    payload = np.packbits(stream).tobytes()
    body = header + struct.pack("<Q", len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("kwargs", [{}, {"lfq": True, "patchify": True, "latent": (4, 6)}, {"batch": 1, "d": 64}])
def test_version1_files_still_decode(kwargs, tmp_path, caplog):
    codes = _codes(**kwargs)
    path = tmp_path / "old.bsqb"
    path.write_bytes(_version1_file(codes))
    with caplog.at_level("WARNING", logger="bsq_tokenizer.bitfile"):
        back = load_codes(path)
    assert "records no tokenizer weights" in caplog.text
    assert back.schedule == codes.schedule and back.image_size == codes.image_size
    assert back.code_scale == pytest.approx(codes.code_scale) and back.spatial_patchify == codes.spatial_patchify
    assert back.weights_fingerprint is None and back.tokenizer_config is None
    assert all(torch.equal(a, b) for a, b in zip(codes.bits, back.bits))


def test_tokenizer_record_round_trips(tiny_model):
    codes = tiny_model.encode(torch.rand(2, 3, 40, 56) * 2 - 1)
    assert codes.weights_fingerprint == tiny_model.weights_fingerprint() and codes.tokenizer_config == tiny_model.config
    data = pack_codes(codes)
    assert data[4] == VERSION == 2
    back = unpack_codes(data)
    assert back.weights_fingerprint == codes.weights_fingerprint and back.tokenizer_config == tiny_model.config
    assert back.select(1).weights_fingerprint == codes.weights_fingerprint == back.to("cpu").weights_fingerprint
    # a damaged record (with a recomputed checksum, so only the record is wrong) is a clear error
    start = 22 + 4 * codes.num_scales + 4
    broken = bytearray(data[:-4])
    broken[start] = ord("[")
    broken += struct.pack("<I", zlib.crc32(bytes(broken)))
    with pytest.raises(ValueError, match="tokenizer record"):
        unpack_codes(bytes(broken))


def test_decoding_with_other_weights_is_refused(tiny_model, tmp_path):
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    path = tmp_path / "x.bsqb"
    save_codes(tiny_model.encode(x), path)
    codes = load_codes(path)
    torch.manual_seed(123)
    other = BSQTokenizer(tiny_model.config).eval()  # same architecture, other weights
    with pytest.raises(WeightsMismatchError) as info:
        other.decode(codes)
    message = str(info.value)
    assert tiny_model.weights_fingerprint() in message and other.weights_fingerprint() in message
    assert "allow_weights_mismatch" in message
    forced = other.decode(codes, allow_weights_mismatch=True)
    assert forced.shape == (1, 3, 32, 48)
    assert all(torch.equal(a, b) for a, b in zip(codes.bits, tiny_model.encode(x).bits))
    # a copy of the same weights (other storage, even another dtype) is the same tokenizer
    copy = BSQTokenizer(tiny_model.config).eval()
    copy.load_state_dict(tiny_model.state_dict())
    torch.testing.assert_close(copy.decode(codes), tiny_model.decode(codes))
    assert copy.to(torch.bfloat16).weights_fingerprint() == tiny_model.weights_fingerprint()


def test_fingerprint_follows_weight_changes(tiny_config):
    model = BSQTokenizer(tiny_config).eval()
    first = model.weights_fingerprint()
    assert model.weights_fingerprint() == first  # cached
    with torch.no_grad():
        model.decoder.conv_out.conv.bias.add_(1.0)  # an in-place update, like an optimizer step
    assert model.weights_fingerprint() != first
