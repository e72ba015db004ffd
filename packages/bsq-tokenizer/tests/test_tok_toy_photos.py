"""Real photos from the official toy dataset round-trip through a tiny model (shapes, determinism, bits <-> file)."""

from __future__ import annotations

import pytest
import torch
from bsq_tokenizer.bitfile import load_codes, save_codes
from bsq_tokenizer.images import load_image, to_image_batch


@pytest.fixture(scope="module")
def photos(toy_data_dir):
    """The official toy photos (the root conftest's ``toy_data_dir`` skips without them)."""
    found = sorted((toy_data_dir / "images").glob("*.jpg"))
    assert len(found) == 10, f"expected the 10 official toy photos in {toy_data_dir / 'images'}"
    return found


@pytest.mark.parametrize("index", [1, 7, 8])  # 500x325, 440x440, 400x275: none a multiple of 16
def test_photo_round_trip_at_native_size(tiny_model, tmp_path, index, photos):
    photo = load_image(photos[index])
    width, height = photo.size
    codes = tiny_model.encode(photo)
    assert codes.image_size == (height, width)
    assert codes.latent_size == (-(-height // 16), -(-width // 16))
    recon = tiny_model.decode(codes)
    assert recon.shape == (1, 3, height, width)
    assert torch.isfinite(recon).all() and recon.abs().max() <= 1
    # deterministic: a second encode gives identical bits, and the packed file restores them exactly
    again = tiny_model.encode(photo)
    assert all(torch.equal(a, b) for a, b in zip(codes.bits, again.bits))
    path = tmp_path / f"{photos[index].stem}.bsqb"
    size = save_codes(codes, path)
    # ~1 bit per bit plus a small header: 64 fixed bytes, 4 per scale, and the tokenizer record (config + fingerprint)
    assert size * 8 < codes.num_bits + 8 * (64 + 512) + 32 * codes.num_scales
    restored = load_codes(path)
    assert all(torch.equal(a, b) for a, b in zip(codes.bits, restored.bits))
    assert torch.equal(tiny_model.decode(restored), recon)


def test_all_photos_batched_at_a_common_size(tiny_model, photos):
    from PIL import Image

    photos = [load_image(p).resize((96, 64), Image.Resampling.LANCZOS) for p in photos]
    batch = to_image_batch(photos)
    codes = tiny_model.encode(photos)
    assert codes.batch_size == len(photos) and codes.schedule[-1] == (4, 6)
    single = tiny_model.encode(batch[3:4])
    assert all(torch.equal(a[3:4], b) for a, b in zip(codes.bits, single.bits))
    # different photos give different bits at the finest scale
    finest = codes.bits[-1].flatten(1)
    assert len({tuple(row.tolist()) for row in finest}) == len(photos)
