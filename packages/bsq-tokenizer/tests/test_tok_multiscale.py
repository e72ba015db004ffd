"""Invariants of the multi-scale quantiser and the transformer-input builder (no fixtures needed)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from bsq_tokenizer.multiscale import (
    bits_to_codes,
    codes_to_bits,
    flip_and_requantize,
    multiscale_quantize,
    patchify_bits,
    resize_area,
    resize_bilinear,
    summed_codes_from_bits,
    transformer_inputs,
    unpatchify_bits,
)
from bsq_tokenizer.schedules import get_scale_schedule, schedule_for_latent


def _features(b=2, d=8, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, h, w, generator=g)


def test_bits_codes_round_trip_and_unit_norm():
    g = torch.Generator().manual_seed(1)
    bits = torch.randint(0, 2, (3, 4, 5, 12), generator=g, dtype=torch.uint8)
    codes = bits_to_codes(bits)
    assert codes.shape == (3, 12, 4, 5) and codes.dtype == torch.float32
    assert torch.allclose(codes.norm(dim=1), torch.ones(3, 4, 5))
    assert torch.equal(codes_to_bits(codes), bits)
    assert torch.equal(bits_to_codes(bits.bool()), codes)
    assert torch.equal(bits_to_codes(bits, scale=1.0).abs(), torch.ones(3, 12, 4, 5))


def test_zero_maps_to_bit_zero():
    assert codes_to_bits(torch.zeros(1, 3, 1, 1)).sum() == 0


def test_area_is_adaptive_pooling_with_overlapping_bins():
    x = torch.arange(16.0).view(1, 1, 1, 16)
    y = resize_area(x, (1, 6))
    # output cell i averages floor(i*16/6) .. ceil((i+1)*16/6)-1
    expected = [x[0, 0, 0, math.floor(i * 16 / 6) : math.ceil((i + 1) * 16 / 6)].mean() for i in range(6)]
    assert torch.allclose(y.flatten(), torch.stack(expected))


def test_bilinear_matches_official_trilinear_on_depth_one():
    x = _features(1, 4, 6, 6)
    for size in [(16, 16), (2, 3), (6, 6)]:
        ref = F.interpolate(x.unsqueeze(2), size=(1, *size), mode="trilinear", align_corners=False).squeeze(2)
        assert torch.allclose(resize_bilinear(x, size), ref, atol=1e-6)


def test_single_full_scale_is_sign_quantisation():
    f = _features()
    bits, summed = multiscale_quantize(f, [(16, 16)])
    assert torch.equal(bits[0], codes_to_bits(f))
    assert torch.allclose(summed, torch.sign(f) / math.sqrt(8))


def test_more_scales_approximate_features_better():
    """Residual quantisation: the error ||F - sum_k up(c_k)|| shrinks as scales are added (on average)."""
    f = _features(4, 8, 16, 16) * 0.3
    sched = get_scale_schedule(1.0, "0.06M")
    bits, summed = multiscale_quantize(f, sched)
    errs = [(f - summed_codes_from_bits(bits, sched, upto_scale=k)).pow(2).mean().item() for k in range(1, 8)]
    assert errs[-1] < errs[0]
    assert torch.allclose(summed_codes_from_bits(bits, sched), summed, atol=1e-6)


def test_transformer_inputs_shapes_and_first_scale():
    f = _features()
    sched = get_scale_schedule(1.0, "0.06M")
    bits, _ = multiscale_quantize(f, sched)
    x = transformer_inputs(bits, sched)
    assert x.shape == (2, 521 - 1, 8)
    # the first input block is bilinear(bilinear(c_1 -> full) -> (2, 2)); c_1 is constant so it is c_1 itself
    c1 = bits_to_codes(bits[0]).flatten(1)
    assert torch.allclose(x[:, :4, :], c1[:, None, :].expand(2, 4, 8), atol=1e-6)
    assert transformer_inputs(bits[-1:], sched[-1:]).shape == (2, 0, 8)


def test_flip_probability_zero_is_teacher_forcing_and_one_inverts():
    f = _features(2, 8, 16, 16, seed=3)
    sched = schedule_for_latent(16, 16)
    bits, _ = multiscale_quantize(f, sched)
    inputs0, labels0 = flip_and_requantize(f, sched, [0.0] * len(sched))
    assert all(torch.equal(a, b) for a, b in zip(labels0, bits))
    assert torch.allclose(inputs0, transformer_inputs(bits, sched), atol=1e-6)
    # probability 1 on scale 1 inverts its bits: inputs of scale 2 come from the inverted first-scale codes
    probs = [1.0] + [0.0] * (len(sched) - 1)
    inputs1, labels1 = flip_and_requantize(f, sched, probs, torch.Generator().manual_seed(0))
    assert torch.equal(labels1[0], bits[0])
    assert torch.allclose(inputs1[:, :4], -inputs0[:, :4], atol=1e-6)
    # the label of scale 2 re-quantises against the flipped history, so it differs from teacher forcing
    assert not torch.equal(labels1[1], bits[1])


def test_flip_rate_and_determinism():
    f = _features(4, 16, 16, 16, seed=5)
    # a full-size first scale makes the scale-2 inputs exactly the (flipped) first-scale codes
    sched = [(16, 16), (16, 16)]
    a = flip_and_requantize(f, sched, [0.3, 0.0], torch.Generator().manual_seed(7))
    b = flip_and_requantize(f, sched, [0.3, 0.0], torch.Generator().manual_seed(7))
    c = flip_and_requantize(f, sched, [0.3, 0.0], torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    flipped = (a[0] > 0).to(torch.uint8).view(4, 16, 16, 16)
    rate = (flipped != a[1][0]).float().mean().item()
    assert abs(rate - 0.3) < 0.02  # 16384 Bernoulli(0.3) draws: std ~0.004
    # the label of scale 2 re-quantises the residual F - flipped codes: where a bit was flipped, the label corrects it
    wrong = flipped != a[1][0]
    assert torch.equal(a[1][1][wrong], a[1][0][wrong])


def test_schedule_validation_errors():
    f = _features()
    with pytest.raises(ValueError, match="last scale"):
        multiscale_quantize(f, [(1, 1), (8, 8)])
    with pytest.raises(ValueError, match="entries"):
        flip_and_requantize(f, [(1, 1), (16, 16)], [0.1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        flip_and_requantize(f, [(1, 1), (16, 16)], [0.1, 1.5])


def test_patchify_bits_matches_pixel_unshuffle_layout():
    g = torch.Generator().manual_seed(4)
    bits = torch.randint(0, 2, (2, 6, 8, 5), generator=g, dtype=torch.uint8)
    grouped = patchify_bits(bits)
    assert grouped.shape == (2, 3, 4, 20)
    # transformer channel 4c + 2i + j = bit c of latent token (2r + i, 2s + j)
    r, s_, c, i, j = 1, 2, 3, 1, 0
    assert grouped[0, r, s_, 4 * c + 2 * i + j] == bits[0, 2 * r + i, 2 * s_ + j, c]
    assert torch.equal(unpatchify_bits(grouped), bits)
    with pytest.raises(ValueError):
        patchify_bits(bits[:, :5])


def test_patchified_transformer_inputs_and_labels():
    f = _features(2, 4, 32, 32, seed=9)
    sched = [(2 * h, 2 * w) for h, w in get_scale_schedule(1.0, "0.06M")]
    bits, _ = multiscale_quantize(f, sched)
    x = transformer_inputs(bits, sched, patchify=True)
    assert x.shape == (2, 521 - 1, 16)
    plain = transformer_inputs(bits, sched)
    assert plain.shape == (2, 4 * (521 - 1), 4)
    inputs, labels = flip_and_requantize(f, sched, [0.0] * len(sched), patchify=True)
    assert torch.allclose(inputs, x, atol=1e-6)
    assert [tuple(lab.shape[1:3]) for lab in labels] == get_scale_schedule(1.0, "0.06M")
    assert all(torch.equal(lab, patchify_bits(b)) for lab, b in zip(labels, bits))
