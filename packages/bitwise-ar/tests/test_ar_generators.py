"""Per-image generators: a batch sampled with one generator (or seed) per image equals each image sampled alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bitwise_ar.config import PRESETS
from bitwise_ar.layout import ScaleLayout
from bitwise_ar.model import PackedText
from bitwise_ar.pipeline import InfinityPipeline
from bitwise_ar.sampling import SamplingConfig, sample
from bitwise_ar.testing import build_tiny_pipeline, random_text, tiny_transformer

# Stochastic settings: CFG on logits, sampled bits with the nucleus rule (no greedy shortcut).
STOCHASTIC = SamplingConfig(cfg=3.0, tau=1.0, top_k=900, top_p=0.97)


@pytest.fixture(scope="module")
def gen_pipe(tmp_path_factory):
    return InfinityPipeline.from_pretrained(build_tiny_pipeline(tmp_path_factory.mktemp("gens") / "model", seed=0))


def test_pipeline_batch_of_seeds_equals_each_image_alone(gen_pipe):
    prompts = ["two red circles", "a blue square to the left of a yellow star", "one cat"]  # different lengths
    seeds = [3, 7, 2**40 + 1]
    kw = {"image_size": (96, 128), "sampling": STOCHASTIC}  # 6x8 latent: small, not square
    batch = gen_pipe(prompts, seed=seeds, **kw)
    for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
        alone = gen_pipe([prompt], seed=seed, **kw)
        for k, bits in enumerate(alone.bits):
            assert torch.equal(batch.bits[k][i], bits[0]), f"image {i} scale {k}"
        assert np.array_equal(np.asarray(batch.images[i]), np.asarray(alone.images[0])), f"image {i}"
    # Generator objects and negative prompts batch the same way.
    negatives = ["black", "white", "green"]
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    with_neg = gen_pipe(prompts, negative_prompt=negatives, generator=generators, **kw)
    alone = gen_pipe([prompts[1]], negative_prompt=[negatives[1]], seed=seeds[1], **kw)
    assert np.array_equal(np.asarray(with_neg.images[1]), np.asarray(alone.images[0]))
    # One shared generator (the old behaviour) ties an image to its batch companions.
    shared = gen_pipe(prompts[:2], seed=seeds[0], **kw)
    assert not torch.equal(shared.bits[-1][1], batch.bits[-1][1])


def test_index_head_batch_of_generators_equals_each_alone():
    config = PRESETS["debug"].replace(codebook_dim=6, head_type="index")
    model = tiny_transformer(config, seed=3)
    layout = ScaleLayout.build([(1, 1), (2, 2), (4, 4), (6, 6)], rope_reference=(64, 64))
    lengths = [3, 7]
    text = random_text(lengths, config.text_channels, seed=1)
    settings = SamplingConfig(cfg=2.0, tau=1.0, top_k=5, top_p=0.9)
    with torch.inference_mode():
        batch = sample(model, text, layout, settings, generator=[torch.Generator().manual_seed(s) for s in (5, 6)])
        for i, rows in enumerate(text.split()):
            alone = sample(model, PackedText(rows, (lengths[i],)), layout, settings,
                           generator=torch.Generator().manual_seed(5 + i))  # fmt: skip
            assert all(torch.equal(b[i], a[0]) for b, a in zip(batch.bits, alone.bits, strict=True)), f"image {i}"


def test_generator_list_must_match_the_batch(gen_pipe):
    with pytest.raises(ValueError, match="a list of 2 \\(one per image\\), got 1"):
        gen_pipe(["a", "b"], generator=[torch.Generator()], image_size=(32, 48))
    with pytest.raises(ValueError, match="a list of 2 \\(one per image\\), got 3"):
        gen_pipe(["a", "b"], seed=[1, 2, 3], image_size=(32, 48))
    # A list of one generator is the same as that generator.
    one = gen_pipe(["a red circle"], generator=[torch.Generator().manual_seed(9)], image_size=(32, 48))
    bare = gen_pipe(["a red circle"], generator=torch.Generator().manual_seed(9), image_size=(32, 48))
    assert torch.equal(one.images_tensor, bare.images_tensor)
