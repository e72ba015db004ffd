"""Compiled static-shape sampling (bitwise_ar.scale_step): same bits as eager except float-rounding ties, KV cache ==
full forward, and the eager fallback where compilation cannot run.

One tiny model (depth 1) and a 3-scale schedule keep the inductor compile to three small graphs.
"""

from __future__ import annotations

import logging

import pytest
import torch
from bitwise_ar import scale_step
from bitwise_ar.config import PRESETS
from bitwise_ar.layout import ScaleLayout
from bitwise_ar.model.head import bit_logit_pairs
from bitwise_ar.sampling import SamplingConfig, sample
from bitwise_ar.testing import random_text, tiny_transformer
from bsq_tokenizer.multiscale import transformer_inputs

SCHEDULE = [(1, 1), (2, 2), (4, 4)]
TIE = 1e-4  # |margin| below which float rounding may flip a bit


def _settings(compile_mode: str) -> SamplingConfig:
    return SamplingConfig(cfg=3.0, tau=1.0, top_k=0, top_p=0.97, compile=compile_mode)


def _run(model, text, layout, compile_mode):
    with torch.inference_mode():
        return sample(model, text, layout, _settings(compile_mode), generator=torch.Generator().manual_seed(5),
                      keep_logits=True)


def test_compiled_sampling_matches_eager_up_to_rounding_ties():
    model = tiny_transformer(PRESETS["debug"].replace(depth=1), seed=3)
    layout = ScaleLayout.build(SCHEDULE)
    text = random_text([3, 6], model.config.text_channels, seed=1)
    eager = _run(model, text, layout, "off")
    compiled = _run(model, text, layout, "on")
    steps = scale_step.compiled_steps(model, torch.device("cpu"))
    assert steps.failure is None, steps.failure

    # replay the draws (one uniform per bit and scale, in order) to find the bits whose margin u - p is a rounding tie
    gen = torch.Generator().manual_seed(5)
    ties = mismatched = 0
    for k, (logits_e, bits_e, bits_c) in enumerate(zip(eager.logits, eager.bits, compiled.bits, strict=True)):
        pairs = bit_logit_pairs(logits_e)
        diff = pairs[..., 1] - pairs[..., 0]
        uniform = torch.rand(diff.shape, generator=gen)
        p_one = torch.sigmoid(diff)
        decided = torch.sigmoid(-diff.abs()) <= 1 - 0.97  # top-p made these deterministic: margin = the logit gap
        margin = torch.where(decided, diff, uniform - p_one)
        tie = (margin.abs() < TIE).view_as(bits_e)
        ties += int(tie.sum())
        differ = bits_e != bits_c
        mismatched += int((differ & ~tie).sum())
        if differ.any():  # later scales legitimately diverge after a flipped tie
            break
        torch.testing.assert_close(compiled.logits[k], logits_e, atol=1e-4, rtol=1e-4)
    assert mismatched == 0, f"{mismatched} bits differ outside rounding ties ({ties} ties)"
    assert all(torch.equal(a, b) for a, b in zip(eager.bits, compiled.bits, strict=True)) or ties > 0

    # the compiled KV-cached logits equal the block-causal full forward on the same bits
    inputs = transformer_inputs(list(compiled.bits), SCHEDULE)
    with torch.inference_mode():
        full = model(text.cat(model.null_text(text.lengths)), inputs.repeat(2, 1, 1), layout)
    for k, head in enumerate(compiled.head_logits):
        torch.testing.assert_close(head, full[:, layout.starts[k] : layout.ends[k]], atol=1e-4, rtol=1e-4)

    # the second image reuses the graphs and the KV buffers: identical result
    again = _run(model, text, layout, "on")
    assert all(torch.equal(a, b) for a, b in zip(again.bits, compiled.bits, strict=True))


def test_compile_falls_back_to_eager_and_says_why(monkeypatch, caplog):
    monkeypatch.setattr(scale_step.shutil, "which", lambda name: None)  # as if no C++ compiler were installed
    model = tiny_transformer(PRESETS["debug"].replace(depth=1), seed=3)
    layout = ScaleLayout.build(SCHEDULE)
    text = random_text([4], model.config.text_channels, seed=2)
    with caplog.at_level(logging.INFO, logger="bitwise_ar.sampling"):
        on = _run(model, text, layout, "on")
    assert "no C++ compiler" in caplog.text
    off = _run(model, text, layout, "off")
    assert all(torch.equal(a, b) for a, b in zip(on.bits, off.bits, strict=True))
    assert "_compiled_steps" not in model.__dict__  # nothing was compiled


def test_compile_setting_is_validated_and_auto_means_cuda_only():
    with pytest.raises(ValueError, match="compile must be one of"):
        SamplingConfig(compile="yes")
    auto = SamplingConfig()
    assert auto.compile == "auto"
    assert not auto.compiles_on(torch.device("cpu")) and auto.compiles_on(torch.device("cuda"))
    assert SamplingConfig(compile="on").compiles_on(torch.device("cpu"))


def test_text_keys_padded_to_the_bucket_leave_attention_unchanged():
    model = tiny_transformer(PRESETS["debug"].replace(depth=1), seed=3)
    text = random_text([3, 6], model.config.text_channels, seed=1)
    with torch.inference_mode():
        cond = model.condition(text)
        model.cache_text_kv(cond)
        x = torch.randn(2, 5, model.config.embed_dim)
        block = model.blocks[0]
        before = block.ca(x, cond.text, cond.text.kv[0])
        scale_step.pad_text_keys(cond)
        assert cond.text.key_mask_BT.shape[1] % scale_step.TEXT_BUCKET == 0
        after = block.ca(x, cond.text, cond.text.kv[0])
    torch.testing.assert_close(after, before, atol=1e-6, rtol=1e-5)
