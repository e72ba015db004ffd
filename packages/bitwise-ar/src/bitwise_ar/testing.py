"""Tiny random components for tests, benchmarks and smoke runs (no network, seconds on a CPU)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from bsq_tokenizer import PRESETS as TOKENIZER_PRESETS
from bsq_tokenizer import BSQTokenizer

from bitwise_ar.config import PRESETS, InfinityConfig
from bitwise_ar.model import InfinityTransformer, PackedText

TINY_VOCABULARY = ["a", "an", "the", "one", "two", "three", "four", "red", "green", "blue", "yellow", "purple", "orange", "white", "black", "circle", "circles", "square", "squares", "triangle", "triangles", "star", "stars", "to", "of", "left", "right", "above", "below", "next", "and", "on", "in", "with", "cat", "dog", "photo"]


def tiny_transformer(config: InfinityConfig | None = None, seed: int = 0) -> InfinityTransformer:
    """The ``debug`` preset (or ``config``) with the official initialisation drawn from ``seed``.

    The gate slots of the official init are ~5e-6, which makes an untrained model ignore its blocks; tests want the
    blocks to matter, so the AdaLN offsets are redrawn at unit scale.
    """
    model = InfinityTransformer(config or PRESETS["debug"]).init_weights(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for block in model.blocks:
            block.ada_gss.copy_(torch.randn(block.ada_gss.shape, generator=gen) * 0.3)
        model.head.weight.normal_(0.0, 1.0 / model.config.embed_dim**0.5, generator=gen)
    return model.eval()


def build_tiny_pipeline(directory: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a complete random pipeline directory (debug transformer + debug tokenizer + tiny T5) and return it."""
    from bitwise_ar.pipeline import InfinityPipeline, PipelineDefaults
    from bitwise_ar.sampling import SamplingConfig
    from bitwise_ar.text_encoder import T5TextEncoder, build_tiny_t5

    directory = Path(directory)
    transformer = tiny_transformer(seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = BSQTokenizer(TOKENIZER_PRESETS["debug"]).eval()
    te_dir = build_tiny_t5(directory / "text_encoder", TINY_VOCABULARY, d_model=transformer.config.text_channels, seed=seed)
    text_encoder = T5TextEncoder(te_dir, max_length=transformer.config.text_maxlen)
    defaults = PipelineDefaults(sampling=SamplingConfig(cfg=3.0, tau=1.0), resolution="0.06M", aspect_ratio="1:1")
    InfinityPipeline(transformer, tokenizer, text_encoder, defaults).save_pretrained(directory)
    return directory


def random_text(lengths: tuple[int, ...] | list[int], channels: int, seed: int = 0) -> PackedText:
    """Random stand-in text-encoder features for prompts of the given token counts."""
    gen = torch.Generator().manual_seed(seed)
    return PackedText(torch.randn(sum(lengths), channels, generator=gen), tuple(lengths))
