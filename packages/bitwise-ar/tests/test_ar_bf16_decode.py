"""The tokenizer's bf16 decode path (the GPU fast path) against float32, run here on the CPU under bf16 autocast with
the trained demo tokenizer: the stated error bound holds, the output is float32, and a tile covering the latent gives
exactly the one-piece decode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from bitwise_ar.cli import DEMO_MODEL_DIR
from bsq_tokenizer import BSQTokenizer
from bsq_tokenizer.model import BF16_DECODE_MAX_ABS, BF16_DECODE_MEAN_ABS


def test_bf16_decode_is_within_the_stated_bound_of_fp32():
    tokenizer = BSQTokenizer.from_pretrained(DEMO_MODEL_DIR / "tokenizer").eval()
    gen = torch.Generator().manual_seed(0)
    images = F.interpolate(torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1, size=(64, 64), mode="bilinear")
    with torch.inference_mode():
        codes = tokenizer.encode(images).summed_codes()
        fp32 = tokenizer.decode_features(codes)
        bf16 = tokenizer.decode_features(codes, dtype=torch.bfloat16)
        tiled = tokenizer.decode_features(codes, dtype=torch.bfloat16, tile_size=codes.shape[-1])
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    err = (bf16 - fp32).abs()
    assert 0 < err.max() <= BF16_DECODE_MAX_ABS, err.max()  # > 0: the bf16 path really ran in bf16
    assert err.mean() <= BF16_DECODE_MEAN_ABS, err.mean()
    assert torch.equal(tiled, bf16)


def test_decode_dtype_is_validated():
    tokenizer = BSQTokenizer.from_pretrained(DEMO_MODEL_DIR / "tokenizer").eval()
    with pytest.raises(ValueError, match="bfloat16"):
        tokenizer.decode_features(torch.zeros(1, tokenizer.config.codebook_dim, 2, 2), dtype=torch.float16)
