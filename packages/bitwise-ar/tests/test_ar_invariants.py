"""Invariants of the transformer and the sampler on a tiny random model."""

from __future__ import annotations

import shutil

import pytest
import torch
from bitwise_ar.config import PRESETS
from bitwise_ar.layout import ScaleLayout
from bitwise_ar.model import PackedText
from bitwise_ar.sampling import SamplingConfig, sample, sample_bits
from bitwise_ar.testing import random_text, tiny_transformer
from bsq_tokenizer.multiscale import transformer_inputs

PLAIN = SamplingConfig(cfg=1.0, tau=1.0, top_k=0, top_p=0.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _per_scale(logits_BLV: torch.Tensor, layout: ScaleLayout) -> list[torch.Tensor]:
    return [logits_BLV[:, s:e] for s, e in zip(layout.starts, layout.ends, strict=True)]


# FlexAttention on a CPU is compiled by Inductor into C++, which needs a compiler on the machine.
FLEX = pytest.param(
    "flex",
    marks=pytest.mark.skipif(
        not (shutil.which("c++") or shutil.which("g++")), reason="FlexAttention on CPU needs a C++ compiler (none found)"
    ),
)


@pytest.mark.parametrize("attention", ["sdpa", "chunked", FLEX])
def test_kv_cache_logits_equal_full_block_causal_forward(ar_model, ar_layout, attention):
    text = random_text([3, 7], ar_model.config.text_channels, seed=1)
    with torch.inference_mode():
        result = sample(ar_model, text, ar_layout, PLAIN, generator=_gen(0), keep_logits=True)
        inputs = transformer_inputs(result.bits, list(ar_layout.schedule))
        full = ar_model(text, inputs, ar_layout, attention=attention)
    for k, (cached, forward) in enumerate(zip(result.head_logits, _per_scale(full, ar_layout), strict=True)):
        assert (cached - forward).abs().max().item() < 1e-4, f"scale {k}"
    # the sampled bits are not degenerate (the test would be vacuous if every bit were equal)
    assert 0.1 < torch.cat([b.flatten() for b in result.bits]).float().mean().item() < 0.9


def test_recompute_prefix_mode_matches_kv_cache(ar_model, ar_layout):
    text = random_text([4], ar_model.config.text_channels, seed=2)
    settings = SamplingConfig(cfg=2.5, tau=0.8, top_k=0, top_p=0.9)
    with torch.inference_mode():
        cached = sample(ar_model, text, ar_layout, settings, generator=_gen(5), keep_logits=True)
        recomputed = sample(ar_model, text, ar_layout, settings, generator=_gen(5), keep_logits=True, use_cache=False)
    for a, b in zip(cached.bits, recomputed.bits, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(cached.logits, recomputed.logits, strict=True):
        assert (a - b).abs().max().item() < 1e-4


def test_sampling_is_deterministic_given_a_generator(ar_model, ar_layout):
    text = random_text([5], ar_model.config.text_channels, seed=3)
    settings = SamplingConfig(cfg=3.0, tau=1.0, top_k=0, top_p=0.0)
    with torch.inference_mode():
        a = sample(ar_model, text, ar_layout, settings, generator=_gen(11))
        b = sample(ar_model, text, ar_layout, settings, generator=_gen(11))
        c = sample(ar_model, text, ar_layout, settings, generator=_gen(12))
    assert all(torch.equal(x, y) for x, y in zip(a.bits, b.bits, strict=True))
    assert torch.equal(a.summed_codes, b.summed_codes)
    assert not torch.equal(a.bits[-1], c.bits[-1])


@pytest.mark.parametrize("cfg_insertion_layer", [0, -1])
def test_batch_of_different_length_prompts_equals_each_alone(ar_model, ar_layout, cfg_insertion_layer):
    lengths = [2, 9, 5]
    text = random_text(lengths, ar_model.config.text_channels, seed=4)
    greedy = SamplingConfig(cfg=3.0, tau=1.0, top_k=1, cfg_insertion_layer=cfg_insertion_layer)
    with torch.inference_mode():
        batch = sample(ar_model, text, ar_layout, greedy, keep_logits=True)
        for i, rows in enumerate(text.split()):
            alone = sample(ar_model, PackedText(rows, (lengths[i],)), ar_layout, greedy, keep_logits=True)
            for k in range(ar_layout.num_scales):
                assert torch.equal(batch.bits[k][i], alone.bits[k][0]), f"prompt {i} scale {k}"
                assert (batch.logits[k][i] - alone.logits[k][0]).abs().max().item() < 1e-4


def test_teacher_forcing_batch_equals_each_alone(ar_model, ar_layout):
    lengths = [6, 1]
    text = random_text(lengths, ar_model.config.text_channels, seed=5)
    gen = _gen(6)
    inputs = torch.randn(2, ar_layout.total_tokens - 1, ar_model.config.codebook_dim, generator=gen)
    with torch.no_grad():
        batch = ar_model(text, inputs, ar_layout)
        for i, rows in enumerate(text.split()):
            alone = ar_model(PackedText(rows, (lengths[i],)), inputs[i : i + 1], ar_layout)
            assert (batch[i] - alone[0]).abs().max().item() < 1e-4


def test_cfg_variants_and_negative_prompt(ar_model, ar_layout):
    text = random_text([4], ar_model.config.text_channels, seed=7)
    negative = random_text([3], ar_model.config.text_channels, seed=8)

    def run(**kw):
        settings = SamplingConfig(**{"tau": 1.0, "top_k": 1, **kw})
        with torch.inference_mode():
            return sample(ar_model, text, ar_layout, settings, keep_logits=True)

    no_cfg = sample(ar_model, text, ar_layout, SamplingConfig(cfg=1.0, top_k=1, tau=1.0), keep_logits=True)
    logits_cfg = run(cfg=4.0)
    feature_cfg = run(cfg=4.0, cfg_insertion_layer=-1)
    # cfg = 1 through the CFG batch equals no CFG at all
    ones = run(cfg=[1.0, 1.0, 1.0, 1.0, 1.0])
    assert all(torch.equal(a, b) for a, b in zip(ones.bits, no_cfg.bits, strict=True))
    assert not torch.allclose(logits_cfg.logits[-1], no_cfg.logits[-1])
    assert not torch.allclose(feature_cfg.logits[-1], logits_cfg.logits[-1])
    with torch.inference_mode():
        neg = sample(ar_model, text, ar_layout, SamplingConfig(cfg=4.0, tau=1.0, top_k=1), keep_logits=True, negative_text=negative)
    assert not torch.allclose(neg.logits[0], logits_cfg.logits[0])
    # per-scale lists: a list shorter than the schedule is an error
    with pytest.raises(ValueError, match="scales"), torch.inference_mode():
        sample(ar_model, text, ar_layout, SamplingConfig(cfg=[3.0, 3.0], tau=1.0))


def test_sample_bits_top_k_top_p_semantics():
    gen = _gen(0)
    diff = torch.tensor([-6.0, -0.5, 0.0, 0.7, 5.0])  # log-odds of bit = 1
    logits = torch.stack((torch.zeros_like(diff), diff), -1).flatten().view(1, 1, -1).expand(1, 4000, -1).contiguous()
    greedy = sample_bits(logits, top_k=1)
    assert greedy[0, 0].tolist() == [0, 0, 0, 1, 1]
    free = sample_bits(logits, generator=gen).float().mean(1)[0]
    assert torch.allclose(free, torch.sigmoid(diff), atol=0.03)
    nucleus = sample_bits(logits, top_p=0.97, generator=gen).float().mean(1)[0]
    # |diff| >= ln(0.97/0.03) = 3.48 -> deterministic; others keep their probability
    assert nucleus[0].item() == 0.0 and nucleus[4].item() == 1.0
    assert torch.allclose(nucleus[1:4], torch.sigmoid(diff[1:4]), atol=0.03)


def test_index_head_ablation_trains_and_samples():
    config = PRESETS["debug"].replace(codebook_dim=6, head_type="index")
    model = tiny_transformer(config, seed=3)
    layout = ScaleLayout.build([(1, 1), (2, 2), (4, 4)], rope_reference=(64, 64))
    text = random_text([3, 2], config.text_channels)
    inputs = torch.randn(2, layout.total_tokens - 1, 6)
    logits = model(text, inputs, layout)
    assert logits.shape == (2, layout.total_tokens, 64)
    logits.logsumexp(-1).mean().backward()
    assert model.head.weight.grad is not None
    with torch.inference_mode():
        out = sample(model, text, layout, SamplingConfig(cfg=2.0, tau=1.0, top_k=5, top_p=0.9), generator=_gen(0))
    assert [tuple(b.shape) for b in out.bits] == [(2, 1, 1, 6), (2, 2, 2, 6), (2, 4, 4, 6)]
    assert out.summed_codes.shape == (2, 6, 4, 4)


def test_bf16_blocks_stay_close_to_fp32(ar_layout):
    fp32 = tiny_transformer(seed=9)
    bf16 = tiny_transformer(seed=9).cast_blocks(torch.bfloat16)
    assert fp32.head.weight.dtype == bf16.head.weight.dtype == torch.float32
    text = random_text([5], fp32.config.text_channels)
    with torch.inference_mode():
        a = sample(fp32, text, ar_layout, PLAIN, generator=_gen(1), keep_logits=True)
        b = sample(bf16, text, ar_layout, PLAIN, generator=_gen(1), keep_logits=True)
    err = (a.head_logits[0] - b.head_logits[0]).abs().max().item()
    assert 0 < err < 0.1 * a.head_logits[0].abs().max().item()


def test_training_forward_errors_and_text_dropout(ar_model, ar_layout):
    text = random_text([3, 4], ar_model.config.text_channels)
    with pytest.raises(ValueError, match="inputs must have shape"):
        ar_model(text, torch.zeros(2, 10, ar_model.config.codebook_dim), ar_layout)
    with pytest.raises(ValueError, match="text_channels"):
        ar_model(random_text([3], 7), torch.zeros(1, ar_layout.total_tokens - 1, 16), ar_layout)
    with pytest.raises(ValueError, match="text_maxlen"):
        ar_model.condition(random_text([ar_model.config.text_maxlen + 1], ar_model.config.text_channels))
    dropped = ar_model.drop_text(text, torch.tensor([True, False]))
    assert torch.equal(dropped.features_NC[:3], ar_model.cfg_uncond[:3].detach())
    assert torch.equal(dropped.features_NC[3:], text.features_NC[3:])


def test_spatial_patchify_matches_the_tokenizer_layout():
    """8B-style model: 4 d_tok bits per token; KV-cached logits == forward on inputs built by bsq_tokenizer."""
    from bsq_tokenizer.multiscale import unpatchify_bits

    config = PRESETS["debug"].replace(codebook_dim=16, spatial_patchify=True)
    model = tiny_transformer(config, seed=5)
    layout = ScaleLayout.build([(1, 1), (2, 2), (3, 3), (4, 4)], rope_reference=(64, 64))
    text = random_text([4, 6], config.text_channels, seed=9)
    with torch.inference_mode():
        result = sample(model, text, layout, PLAIN, generator=_gen(3), keep_logits=True)
        assert result.summed_codes.shape == (2, 4, 8, 8)  # d_tok = 4 bits on the 2x finer latent grid
        latent_bits = [unpatchify_bits(b) for b in result.bits]
        latent_schedule = [(2 * h, 2 * w) for h, w in layout.schedule]
        inputs = transformer_inputs(latent_bits, latent_schedule, patchify=True)
        full = model(text, inputs, layout)
    for cached, forward in zip(result.head_logits, _per_scale(full, layout), strict=True):
        assert (cached - forward).abs().max().item() < 1e-4
