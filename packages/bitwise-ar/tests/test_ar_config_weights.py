"""Presets (exact parameter counts), the official-config mapping, and checkpoint loading/saving."""

from __future__ import annotations

import json
import re

import pytest
import torch
from bitwise_ar.config import PRESETS, InfinityConfig, count_parameters_analytic, from_official_config
from bitwise_ar.model import InfinityTransformer
from bitwise_ar.testing import random_text, tiny_transformer
from bitwise_ar.weights import (
    CheckpointMismatchError,
    convert_official_state_dict,
    from_pretrained,
    load_official,
    to_official_state_dict,
)
from safetensors.torch import load_file, save_file

# Exact counts from instantiating the official classes (reference §1.1).
OFFICIAL_PARAMETER_COUNTS = {
    "infinity-layer12": 125_185_696,
    "infinity-layer16": 361_633_792,
    "infinity-layer24": 940_944_832,
    "infinity-layer32": 2_256_694_912,
    "infinity-layer40": 4_716_421_888,
    "infinity-layer48": 8_767_198_528,
    "infinity-125m": 125_185_696,
    "infinity-2b": 2_204_564_032,
    "infinity-8b": 8_375_791_824,
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMETER_COUNTS))
def test_preset_parameter_counts_on_meta_device(name):
    with torch.device("meta"):
        model = InfinityTransformer(PRESETS[name])
    assert model.num_parameters() == OFFICIAL_PARAMETER_COUNTS[name]
    assert count_parameters_analytic(PRESETS[name]) == OFFICIAL_PARAMETER_COUNTS[name]


KEY_FILES = {"infinity_2b_keys.txt": "infinity-2b", "infinity_125M_keys.txt": "infinity-125m", "infinity_8b_keys.txt": "infinity-8b"}


@pytest.mark.parametrize("filename", sorted(KEY_FILES))
def test_official_key_lists_map_onto_our_state_dict(filename, shared_dir):
    path = shared_dir / "reference" / "official_keys" / filename
    if not path.is_file():
        pytest.skip(f"official key list {filename} not available (shared/reference absent)")
    official = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^(\S+) \(([\d, ]*)\) \S+$", line)
        official[m[1]] = torch.empty(tuple(int(v) for v in m[2].replace(",", " ").split()), device="meta")
    with torch.device("meta"):
        model = InfinityTransformer(PRESETS[KEY_FILES[filename]])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    converted = {k: tuple(v.shape) for k, v in convert_official_state_dict(official).items()}
    assert converted == ours


def test_from_official_config_and_validation():
    official = dict(depth=4, embed_dim=64, num_heads=2, mlp_ratio=4.0, text_channels=128, text_maxlen=16,
                    codebook_dim=32, use_bit_label=1, shared_aln=True, cos_attn=True, rope2d_normalized_by_hw=2)
    config = from_official_config(official)
    assert (config.depth, config.embed_dim, config.head_dim, config.ffn_hidden, config.num_logits) == (4, 64, 32, 256, 64)
    assert config.text_pool_num_heads == 1 and config.text_pool_dim_per_head == 64
    with pytest.raises(ValueError, match="swiglu"):
        from_official_config({**official, "swiglu": True})
    with pytest.raises(ValueError, match="divisible by num_heads"):
        InfinityConfig(depth=2, embed_dim=66, num_heads=4)
    with pytest.raises(ValueError, match="head_type='index'"):
        InfinityConfig(depth=2, embed_dim=64, num_heads=2, codebook_dim=32, head_type="index")
    with pytest.raises(ValueError, match="unknown InfinityConfig keys"):
        InfinityConfig.from_dict({"depth": 2, "embed_dim": 64, "num_heads": 2, "width": 3})
    assert PRESETS["infinity-8b"].tokenizer_codebook_dim == 14


@pytest.fixture(scope="module")
def tiny_official(tmp_path_factory):
    model = tiny_transformer(seed=4)
    return model, to_official_state_dict(model.state_dict(), block_chunks=2), tmp_path_factory.mktemp("ckpt")


def _same(a: InfinityTransformer, b: InfinityTransformer) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_formats_load_strictly(tiny_official):
    model, official, tmp = tiny_official
    assert any(k.startswith("block_chunks.1.module.0.") for k in official)
    flat = tmp / "flat.pth"
    torch.save(official, flat)
    nested = tmp / "trainer.pth"
    torch.save({"trainer": {"gpt_fsdp": official, "optimizer": {}}, "args": {"x": 1}}, nested)
    shards = tmp / "shards"
    shards.mkdir()
    keys = sorted(official)
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2 :])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: official[k].contiguous() for k in part}, shards / name)
        weight_map.update(dict.fromkeys(part, name))
    (shards / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for source in (flat, nested, shards, shards / "model.safetensors.index.json"):
        assert _same(load_official(source, model.config), model), source
    assert _same(load_official(flat), model)  # architecture inferred from shapes


def test_mismatched_checkpoints_list_the_keys(tiny_official):
    model, official, tmp = tiny_official
    broken = dict(official)
    del broken["head.bias"]
    broken["extra.weight"] = torch.zeros(1)
    broken["word_embed.weight"] = torch.zeros(64, 8)
    with pytest.raises(CheckpointMismatchError) as info:
        load_official(broken, model.config)
    message = str(info.value)
    assert "head.bias" in message and "extra.weight" in message and "word_embed.weight" in message
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_official(tmp / "nope.pth")
    (tmp / "partial").mkdir()
    (tmp / "partial" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    with pytest.raises(FileNotFoundError, match=r"gone\.safetensors"):
        load_official(tmp / "partial")


def test_save_pretrained_round_trip(tiny_official, tmp_path):
    model = tiny_official[0]
    out = model.save_pretrained(tmp_path / "transformer")
    loaded = from_pretrained(out)
    assert loaded.config == model.config and _same(loaded, model)
    text = random_text([3], model.config.text_channels)
    inputs = torch.randn(1, 20, model.config.codebook_dim)
    schedule = [(1, 1), (2, 2), (4, 4)]
    with torch.no_grad():
        expected = model(text, inputs, schedule)
        # the loaded weights are the memory-mapped file, aligned only to their element size: CPU kernels may take
        # other vectorised paths, so outputs agree to rounding; the same weights in fresh (aligned) memory agree exactly
        torch.testing.assert_close(loaded(text, inputs, schedule), expected, rtol=1e-5, atol=1e-5)
        aligned = from_pretrained(out)
        aligned.load_state_dict({k: v.clone() for k, v in aligned.state_dict().items()}, assign=True)
        assert torch.equal(aligned(text, inputs, schedule), expected)
    (out / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        from_pretrained(out)
    with pytest.raises(FileNotFoundError, match="convert-official"):
        from_pretrained(tmp_path / "missing")


def test_one_model_io_with_the_tokenizer(tiny_official, tmp_path):
    """One exception type, one from_pretrained(path, *, device, dtype), save_pretrained keeps each tensor's dtype."""
    from bitwise_ar import weights
    from bsq_tokenizer import CheckpointMismatchError as TokenizerError

    assert weights.CheckpointMismatchError is TokenizerError
    model, official, _ = tiny_official
    mixed = from_pretrained(model.save_pretrained(tmp_path / "fp32"))
    mixed.cast_blocks(torch.bfloat16)
    out = mixed.save_pretrained(tmp_path / "mixed")
    stored = {k: v.dtype for k, v in load_file(out / "model.safetensors").items()}
    assert stored == {k: v.dtype for k, v in mixed.state_dict().items()}
    assert {torch.bfloat16, torch.float32} <= set(stored.values())
    again = InfinityTransformer.from_pretrained(out)
    assert all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(again.state_dict().values(), mixed.state_dict().values()))
    as64 = InfinityTransformer.from_pretrained(out, device="cpu", dtype=torch.float64)
    assert {v.dtype for v in as64.state_dict().values() if v.is_floating_point()} == {torch.float64}
    # an in-memory official state dict is copied: training the loaded model leaves the caller's tensors alone
    before = official["head.bias"].clone()
    loaded = load_official(official, model.config, dtype=None)
    with torch.no_grad():
        loaded.head.bias.add_(1.0)
    assert torch.equal(official["head.bias"], before)
