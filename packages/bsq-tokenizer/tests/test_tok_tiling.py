"""Tiled VAE decode: exact when one tile covers the latent, a partition of unity, close to the full decode, and a
bounded largest activation."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from bsq_tokenizer.tiling import tile_starts, tiled_decode


@pytest.fixture(scope="module")
def tok_and_codes(debug_model):
    tok = debug_model  # the "debug" preset drawn with torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    # smooth image-like inputs (bicubic-upsampled noise) so the codes are not white noise
    images = F.interpolate(torch.rand(1, 3, 5, 5, generator=gen) * 2 - 1, size=(192, 192), mode="bicubic").clamp(-1, 1)
    codes = tok.encode(images)
    with torch.no_grad():
        full = tok.decode_features(codes.summed_codes())
    return tok, codes, full


def _largest_activation(module: torch.nn.Module, run) -> int:
    """Largest number of elements in any single module output while ``run()`` executes."""
    largest = 0

    def hook(_module, _inputs, output):
        nonlocal largest
        largest = max(largest, output.numel())

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return largest


def test_tile_starts_cover_the_axis():
    assert tile_starts(16, 32, 8) == [0]
    assert tile_starts(16, 8, 2) == [0, 6, 8]  # the last tile is moved back to end at 16
    assert tile_starts(16, 8, 0) == [0, 8]
    for length, tile, overlap in [(64, 32, 8), (37, 10, 3), (5, 4, 3)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + tile == length
        assert all(0 < b - a <= tile - overlap for a, b in itertools.pairwise(starts))


def test_blending_is_a_partition_of_unity():
    """With a pointwise 'decoder' (nearest upsampling) tiling must reproduce the full output: the ramps sum to 1."""
    z = torch.randn(1, 3, 9, 14, generator=torch.Generator().manual_seed(1))

    def up(t):
        return F.interpolate(t, scale_factor=4, mode="nearest")

    for tile, overlap in [(5, 2), (6, 0), (4, 3)]:
        out = tiled_decode(up, z, tile_size=tile, overlap=overlap, patch_size=4)
        assert out.shape == (1, 3, 36, 56) and (out - up(z)).abs().max() < 1e-6


def test_tile_at_least_the_latent_is_exactly_the_full_decode(tok_and_codes):
    tok, codes, full = tok_and_codes
    z = codes.summed_codes()
    with torch.no_grad():
        assert torch.equal(tok.decode_features(z, tile_size=12), full)  # latent is 12 x 12
    assert torch.equal(tok.decode(codes, tile_size=40, tile_overlap=10), full)  # 192 x 192: no crop


def test_tiled_decode_is_close_and_improves_with_tile_size(tok_and_codes):
    """Per-tile GroupNorm statistics make tiling approximate. Measured on this random debug model (12x12 latent):
    tile 10 / overlap 4 -> mean abs error 0.068 (PSNR 23.8 dB over the [-1, 1] range); tile 6 / overlap 3 -> 0.196
    (16.6 dB). A random network is far less local than a trained decoder, so these bounds are loose upper bounds."""
    tok, codes, full = tok_and_codes

    def error(tile, overlap):
        with torch.no_grad():
            tiled = tok.decode(codes, tile_size=tile, tile_overlap=overlap)
        assert tiled.shape == full.shape and tiled.abs().max() <= 1.0
        diff = tiled - full
        return diff.abs().mean().item(), (10 * torch.log10(4 / diff.pow(2).mean())).item()

    mae_large, psnr_large = error(10, 4)
    mae_small, psnr_small = error(6, 3)
    assert mae_large < 0.09 and psnr_large > 21.5
    assert mae_small < 0.25 and psnr_small > 14.5
    assert mae_large < 0.5 * mae_small  # larger tiles -> closer to the full decode (12 = exact, tested above)


def test_tiling_bounds_the_largest_activation(tok_and_codes):
    tok, codes, _ = tok_and_codes
    z = codes.summed_codes()[:, :, :8, :12]  # 8 x 12 latent
    with torch.no_grad():
        full = _largest_activation(tok.decoder, lambda: tok.decode_features(z))
        tiled = _largest_activation(tok.decoder, lambda: tok.decode_features(z, tile_size=4, tile_overlap=1))
    # every decoder layer scales with the area, so the largest map shrinks by exactly (4 * 4) / (8 * 12)
    assert tiled * 8 * 12 == full * 4 * 4
    assert full == 16 * 128 * 192  # the debug decoder's widest map: 16 channels at full resolution


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile_size": 0}, "positive int"),
        ({"tile_size": 8, "tile_overlap": 8}, r"\[0, tile_size=8\)"),
        ({"tile_size": 8, "tile_overlap": -1}, "tile_overlap"),
        ({"tile_overlap": 2}, "without tile_size"),
        ({"tile_size": 2.5}, "positive int"),
    ],
)
def test_bad_tiling_arguments(tok_and_codes, kwargs, message):
    tok, codes, _ = tok_and_codes
    with pytest.raises(ValueError, match=message):
        tok.decode_features(codes.summed_codes(), **kwargs)
