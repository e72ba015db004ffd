"""The demo's tiny T5 is taught the caption grammar so that its features carry word order (which colour goes with
which shape, which object comes first), unlike a random T5, which is nearly a bag of words."""

import json

import pytest
import torch

pytest.importorskip("transformers")

from bitwise_ar.text_encoder import T5TextEncoder, build_tiny_t5
from bitwise_ar.train.config import load_config
from bitwise_ar.train.trainer import model_config
from infinity_shapes import caption_words, parse_caption
from infinity_shapes.ablation import ARMS
from infinity_shapes.recipe import DEMO_CONFIG, build_demo_text_encoder, caption_slots, pretrain_caption_encoder

SWAPPED = ("a yellow square and a green circle", "a green square and a yellow circle")


def _pooled_cosine(directory) -> float:
    text = T5TextEncoder(directory).encode(list(SWAPPED))
    a, b = (f.mean(0) for f in text.features_NC.split(list(text.lengths)))
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_caption_slots_follow_caption_order():
    spec = parse_caption("two red circles to the left of a blue square")
    # colours red=1 .. yellow=4, shapes circle=1 .. triangle=3, counts as numbers, relations left of=1 .. below=4
    assert caption_slots(spec) == [1, 1, 2, 3, 2, 1, 1]
    assert caption_slots(parse_caption("a yellow triangle")) == [4, 3, 1, 0, 0, 0, 0]
    assert caption_slots(parse_caption("a green circle below a red square"))[-1] == 4


def test_caption_pretraining_makes_features_order_aware(tmp_path):
    directory = tmp_path / "t5"
    build_tiny_t5(directory, caption_words(), d_model=32, num_layers=2, num_heads=4, d_ff=64, seed=0)
    random_cosine = _pooled_cosine(directory)
    assert random_cosine > 0.99  # the random encoder barely tells the two bindings apart

    record = pretrain_caption_encoder(str(directory), steps=300, batch_size=64)
    assert record["slot_accuracy"] > 0.8
    assert json.loads((directory / "caption_pretraining.json").read_text()) == record
    # swapping the colours of the two objects now moves the pooled features many times further
    assert 1 - _pooled_cosine(directory) > 5 * (1 - random_cosine)

    # the demo stage keeps a finished encoder as it is
    weights = directory / "model.safetensors"
    before = weights.read_bytes()
    build_demo_text_encoder(str(directory))
    assert weights.read_bytes() == before


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_ablation_arms_are_valid_demo_configs(arm):
    """Each arm's overrides load onto the recipe's config, and its model reads its tokenizer's bits."""
    spec = ARMS[arm]
    config = load_config(DEMO_CONFIG, spec["overrides"])
    model = model_config(config)
    assert model.codebook_dim == spec["tokenizer_bits"]
    assert model.head_type == ("index" if arm.startswith("index") else "bits")
    assert config.train.teacher_forcing == (arm == "teacher_forcing")
