"""Winograd F(2x2, 3x3) convolution (the CPU inference path of the tokenizer's 3x3 convs): equal to the direct
convolution up to float rounding, taken exactly where it should be, and never stale after a weight change."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from bsq_tokenizer import BSQTokenizer, TokenizerConfig
from bsq_tokenizer.autoencoder import WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_WORK, _Conv
from bsq_tokenizer.winograd import winograd_conv3x3, winograd_filter


@pytest.mark.parametrize(
    ("B", "C", "K", "H", "W", "band_tiles"),
    [
        (1, 8, 8, 16, 16, 256),  # one band
        (2, 5, 3, 9, 7, 1),  # odd sizes, one tile row per band
        (2, 4, 6, 10, 10, 20),  # bands of two tile rows and a shorter last band
        (1, 3, 4, 1, 1, 256),  # a single pixel: everything it sees is padding
        (3, 2, 2, 2, 5, 3),
    ],
)
def test_winograd_equals_direct_convolution_in_float64(B, C, K, H, W, band_tiles):
    """In float64 the rounding is ~1e-15, so any indexing or padding mistake would show."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    weight = torch.randn(K, C, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(K, generator=g, dtype=torch.float64)
    direct = F.conv2d(x, weight, bias, padding=1)
    for b in (bias, None):
        ours = winograd_conv3x3(x, winograd_filter(weight), b, band_tiles=band_tiles)
        reference = direct if b is not None else F.conv2d(x, weight, None, padding=1)
        assert ours.shape == reference.shape and ours.is_contiguous()
        assert torch.allclose(ours, reference, rtol=0, atol=1e-12), (ours - reference).abs().max()


def test_winograd_float32_error_is_float_rounding():
    """The float32 error at a tokenizer-sized layer stays at the 1e-6 level of the direct convolution's own
    rounding (measured against a float64 reference)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 64, 48, 40, generator=g)
    weight = torch.randn(96, 64, 3, 3, generator=g) / (64 * 9) ** 0.5
    exact = F.conv2d(x.double(), weight.double(), padding=1)
    ours = winograd_conv3x3(x, winograd_filter(weight))
    direct = F.conv2d(x, weight, padding=1)
    assert exact.abs().max() > 3  # activations of order 1, not a degenerate test
    assert (ours.double() - exact).abs().max() < 1e-5
    assert (ours.double() - exact).abs().max() < 4 * (direct.double() - exact).abs().max() + 1e-6


def test_winograd_takes_empty_batches_and_maps():
    weight = torch.randn(4, 3, 3, 3)
    assert winograd_conv3x3(torch.zeros(0, 3, 16, 16), winograd_filter(weight)).shape == (0, 4, 16, 16)
    assert winograd_conv3x3(torch.zeros(2, 3, 0, 5), winograd_filter(weight)).shape == (2, 4, 0, 5)
    conv, x = _eligible_conv()
    with torch.inference_mode():
        assert conv(x[:0]).shape == (0, *conv(x).shape[1:])


def test_winograd_rejects_a_filter_for_other_channels():
    with pytest.raises(ValueError, match="Winograd filter for 3 channels"):
        winograd_conv3x3(torch.zeros(1, 3, 4, 4), winograd_filter(torch.zeros(2, 4, 3, 3)))
    with pytest.raises(ValueError, match=r"\(K, C, 3, 3\)"):
        winograd_filter(torch.zeros(2, 4, 1, 1))


def _eligible_conv(seed: int = 0) -> tuple[_Conv, torch.Tensor]:
    torch.manual_seed(seed)
    conv = _Conv(WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS)
    side = int((WINOGRAD_MIN_WORK / WINOGRAD_MIN_CHANNELS**2) ** 0.5)
    return conv, torch.randn(1, WINOGRAD_MIN_CHANNELS, side, side)


def test_conv_module_takes_winograd_only_without_autograd_on_cpu():
    conv, x = _eligible_conv()
    with torch.inference_mode():
        inference = conv(x)
        expected = winograd_conv3x3(x, winograd_filter(conv.conv.weight), conv.conv.bias)
    direct = conv(x)  # autograd on: the plain convolution
    assert direct.requires_grad
    assert torch.equal(inference, expected)
    assert not torch.equal(inference, direct.detach())  # a different computation ...
    assert torch.allclose(inference, direct.detach(), rtol=0, atol=1e-5)  # ... of the same result
    small = x[:, :, :7, :7]  # below the size threshold: direct even without autograd
    with torch.no_grad():
        assert torch.equal(conv(small), F.conv2d(small, conv.conv.weight, conv.conv.bias, padding=1))
    few_channels = _Conv(WINOGRAD_MIN_CHANNELS - 1, WINOGRAD_MIN_CHANNELS)
    assert not few_channels._winograd_capable and not _Conv(64, 64, stride=2, padding=0)._winograd_capable


def test_transformed_filter_follows_weight_changes():
    """The cached transformed filter is recomputed after load_state_dict, an in-place edit and a dtype change."""
    conv, x = _eligible_conv(0)
    other, _ = _eligible_conv(1)
    with torch.no_grad():
        before = conv(x)
        conv.load_state_dict(other.state_dict())
        assert torch.equal(conv(x), other(x)) and not torch.allclose(conv(x), before)
        conv.conv.weight.mul_(2)
        doubled = F.conv2d(x, conv.conv.weight, conv.conv.bias, padding=1)
        assert torch.allclose(conv(x), doubled, rtol=0, atol=1e-5)
        conv.double()
        assert conv(x.double()).dtype == torch.float64
        assert torch.allclose(conv(x.double()), doubled.double(), rtol=0, atol=1e-5)


def test_tokenizer_inference_path_matches_the_plain_path():
    """A model wide enough for the Winograd path: encode's bits are identical and the decoded image equal within
    1e-5 between the inference path (Winograd, subpixel upsample, in-place ops) and the autograd path."""
    config = TokenizerConfig(
        codebook_dim=16, base_channels=64, channel_multipliers=(1, 1, 1, 1, 1), num_res_blocks=1, patch_size=16
    )
    torch.manual_seed(0)
    model = BSQTokenizer(config).eval().requires_grad_(False)
    taken = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: taken.append(m._use_winograd(i[0])))
        for m in model.modules()
        if isinstance(m, _Conv) and m._winograd_capable
    ]
    images = torch.rand(1, 3, 128, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        fast_features = model.encode_features(images)
        fast_codes = model.encode(images)
        fast_image = model.decode(fast_codes)
    for hook in hooks:
        hook.remove()
    assert sum(taken) >= 4  # the large layers did run as Winograd
    with torch.enable_grad():
        plain_features = model.encode_features(images)
        plain_codes = model.encode(images)
        plain_image = model.decode(plain_codes)
    assert (fast_features - plain_features).abs().max() < 1e-5
    assert all(torch.equal(a, b) for a, b in zip(fast_codes.bits, plain_codes.bits, strict=True))
    assert (fast_image - plain_image).abs().max() < 1e-5
