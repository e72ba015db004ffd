"""Parity with the official implementation on every fixture of kind "infinity" (shared/fixtures/official and
$INFINITY_OFFICIAL_FIXTURES, found by the repository's root ``conftest.py``; one test id per fixture file).

The fixture README lists which keys are the reference and which are debugging aids: the required keys are asserted,
the aids (``teacher_forcing_intermediates``, ``greedy_generation.head_logits_cond/uncond``) are compared only when a
fixture has them, so a fixture without them passes when its bits and logits agree.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bitwise_ar.config import from_official_config
from bitwise_ar.layout import ScaleLayout
from bitwise_ar.model import InfinityTransformer, PackedText
from bitwise_ar.sampling import SamplingConfig, sample
from bitwise_ar.weights import convert_official

TOL = 1e-4
REQUIRED_KEYS = (
    "official_config", "state_dict", "paired_vae", "text_features", "text_lengths", "scale_schedule",
    "transformer_inputs", "teacher_forcing_logits", "greedy_generation",
)  # fmt: skip
REQUIRED_GENERATION_KEYS = ("settings", "bits", "logits", "summed_codes", "image")


@pytest.fixture(scope="module")
def case(official_infinity_fixture: Path, tmp_path_factory):
    """The fixture plus a model converted from its official state dict through the user-facing converter."""
    path = official_infinity_fixture
    fx = torch.load(path, map_location="cpu", weights_only=True)
    official_file = tmp_path_factory.mktemp("official") / "official.pth"
    torch.save(fx["state_dict"], official_file)  # a flat official .pth, as released
    out_dir = convert_official(official_file, tmp_path_factory.mktemp("ours"), from_official_config(fx["official_config"]))
    model = InfinityTransformer.from_pretrained(out_dir).eval()
    return path, fx, model


def test_fixture_has_the_required_keys(case):
    path, fx, _ = case
    missing = [key for key in REQUIRED_KEYS if key not in fx]
    missing += [f"greedy_generation.{key}" for key in REQUIRED_GENERATION_KEYS if key not in fx.get("greedy_generation", {})]
    assert not missing, f"{path}: required keys missing: {missing}"


def _text(fx) -> PackedText:
    return PackedText.from_padded(fx["text_features"], fx["text_lengths"])


@pytest.mark.parametrize("attention", ["sdpa", "chunked"])
def test_teacher_forcing_logits(case, attention):
    _, fx, model = case
    with torch.no_grad():
        logits = model(_text(fx), fx["transformer_inputs"], fx["scale_schedule"], attention=attention)
    assert logits.shape == fx["teacher_forcing_logits"].shape
    assert (logits - fx["teacher_forcing_logits"]).abs().max().item() <= TOL


def test_teacher_forcing_intermediates(case):
    path, fx, model = case
    inter = fx.get("teacher_forcing_intermediates")
    if inter is None:
        pytest.skip(f"{path.name} has no teacher_forcing_intermediates (an optional debugging aid)")
    with torch.no_grad():
        cond = model.condition(_text(fx))
    memory = cond.text.memory_BTC[cond.text.key_mask_BT]
    ours = {"cond_BD": cond.cond_BD, "shared_ada_lin_out": cond.ada_B16C, "ca_memory_packed": memory}
    compared = [key for key in ours if key in inter]
    if not compared:
        pytest.skip(f"{path.name}: teacher_forcing_intermediates holds none of {sorted(ours)}")
    for key in compared:
        assert (ours[key] - inter[key]).abs().max().item() <= TOL, key


def test_rope_reference_follows_official_rule(case):
    _, fx, _ = case
    layout = ScaleLayout.build(fx["scale_schedule"])
    assert list(layout.rope_reference) == list(fx["official_config"]["rope_reference_last_scale_1M"])


@pytest.mark.parametrize("use_cache", [True, False], ids=["kv_cache", "recompute_prefix"])
def test_greedy_generation(case, use_cache):
    path, fx, model = case
    gen = fx["greedy_generation"]
    s = gen["settings"]
    assert not s["negative_prompt"]
    settings = SamplingConfig(
        cfg=s["cfg_list"], tau=s["tau_list"], top_k=s["top_k"], top_p=s["top_p"], cfg_insertion_layer=s["cfg_insertion_layer"][0]
    )
    layout = ScaleLayout.build(fx["scale_schedule"])
    B = len(fx["text_lengths"])
    with torch.inference_mode():
        result = sample(model, _text(fx), layout, settings, keep_logits=True, use_cache=use_cache)
    for k in range(layout.num_scales):
        assert torch.equal(result.bits[k], gen["bits"][k]), f"bits differ at scale {k}"
        assert (result.logits[k] - gen["logits"][k]).abs().max().item() <= TOL, f"CFG logits differ at scale {k}"
        # raw head outputs of the two CFG halves: debugging aids, compared when the fixture has them
        if "head_logits_cond" in gen:
            assert (result.head_logits[k][:B] - gen["head_logits_cond"][k]).abs().max().item() <= TOL
        if "head_logits_uncond" in gen:
            assert (result.head_logits[k][B:] - gen["head_logits_uncond"][k]).abs().max().item() <= TOL
    assert (result.summed_codes - gen["summed_codes"]).abs().max().item() <= 1e-5

    if not use_cache:
        return
    from bsq_tokenizer import BSQTokenizer, config_from_official

    vae_path = path.parent / fx["paired_vae"]
    if not vae_path.is_file():
        pytest.skip(f"paired VAE fixture {vae_path} not found")
    vae_fx = torch.load(vae_path, map_location="cpu", weights_only=True)
    tokenizer = BSQTokenizer.from_official(vae_fx["state_dict"], config_from_official(vae_fx["official_config"]))
    with torch.inference_mode():
        image = tokenizer.decode_features(result.summed_codes)
    assert (image - gen["image"]).abs().max().item() <= TOL
