"""Numerical parity with the official implementation on every ``bsq_vae`` fixture (loaded like users load weights);
the fixtures are found by the repository's root ``conftest.py``."""

from __future__ import annotations

import pytest
import torch
from bsq_tokenizer import BSQTokenizer, config_from_official
from bsq_tokenizer.multiscale import flip_and_requantize, multiscale_quantize, transformer_inputs

TOL = 1e-4


@pytest.fixture(scope="module")
def loaded(official_bsq_vae_fixture):
    """One official fixture (the root conftest parametrizes ``official_bsq_vae_fixture`` over every file)."""
    fx = torch.load(official_bsq_vae_fixture, map_location="cpu", weights_only=True)
    model = BSQTokenizer.from_official(fx["state_dict"], config_from_official(fx["official_config"]))
    return fx, model


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def test_encoder_features_match(loaded):
    fx, model = loaded
    with torch.no_grad():
        features = model.encode_features(fx["images"])
    assert _max_err(features, fx["raw_features"]) < TOL


def test_quantiser_bits_codes_inputs_match(loaded):
    fx, _ = loaded
    schedule = [tuple(s) for s in fx["scale_schedule"]]
    bits, summed = multiscale_quantize(fx["raw_features"], schedule)
    assert len(bits) == len(fx["bits"])
    for k, (ours, ref) in enumerate(zip(bits, fx["bits"])):
        assert ours.dtype == torch.uint8 and ours.shape == ref.shape
        assert torch.equal(ours, ref), f"bits differ at scale {k + 1}"
    assert _max_err(summed, fx["summed_codes"]) < TOL
    assert _max_err(transformer_inputs(bits, schedule), fx["transformer_inputs"]) < TOL
    inputs, labels = flip_and_requantize(fx["raw_features"], schedule, [0.0] * len(schedule))
    assert _max_err(inputs, fx["transformer_inputs"]) < TOL
    assert all(torch.equal(a, b) for a, b in zip(labels, fx["bits"]))


def test_decoder_matches(loaded):
    fx, model = loaded
    with torch.no_grad():
        recon = model.decode_features(fx["summed_codes"])
    assert _max_err(recon, fx["reconstruction"]) < TOL


def test_end_to_end_encode_decode_matches(loaded):
    """The high-level API (default schedule, padding logic) reproduces the official pipeline."""
    fx, model = loaded
    codes = model.encode(fx["images"])
    assert [list(s) for s in codes.schedule] == [list(s) for s in fx["scale_schedule"]]
    for ours, ref in zip(codes.bits, fx["bits"]):
        assert torch.equal(ours, ref)
    assert _max_err(codes.transformer_inputs(), fx["transformer_inputs"]) < TOL
    assert _max_err(model.decode(codes), fx["reconstruction"]) < TOL


def test_plain_key_spelling_and_pth_wrapper_load(loaded, tmp_path):
    """The official loader also accepts '.weight' names without the '.conv'/'.norm' infix, and {'vae': ...} files."""
    fx, model = loaded
    plain = {
        k.replace(".conv.weight", ".weight")
        .replace(".conv.bias", ".bias")
        .replace(".norm.weight", ".weight")
        .replace(".norm.bias", ".bias"): v
        for k, v in fx["state_dict"].items()
    }
    assert plain.keys() != fx["state_dict"].keys()
    path = tmp_path / "infinity_vae_tiny.pth"
    torch.save({"vae": plain, "step": 3}, path)
    reloaded = BSQTokenizer.from_official(path, fx["official_config"])
    for (k, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), k
