"""Shared fixtures for the bsq-tokenizer tests (tiny models, toy photos)."""

from __future__ import annotations

import pytest
import torch
from bsq_tokenizer import PRESETS, BSQTokenizer, TokenizerConfig


@pytest.fixture(scope="session")
def tiny_config() -> TokenizerConfig:
    """A very small stride-16 model (fast on CPU)."""
    return TokenizerConfig(
        codebook_dim=8, base_channels=8, channel_multipliers=(1, 1, 2, 2, 2), num_res_blocks=1, norm_groups=4
    )


@pytest.fixture(scope="session")
def tiny_model(tiny_config: TokenizerConfig) -> BSQTokenizer:
    torch.manual_seed(0)
    return BSQTokenizer(tiny_config).eval()


@pytest.fixture(scope="session")
def debug_model() -> BSQTokenizer:
    torch.manual_seed(0)
    return BSQTokenizer(PRESETS["debug"]).eval()


@pytest.fixture(scope="session")
def official_like_model() -> BSQTokenizer:
    """A small model with official-compatible widths (multiples of 32), so its architecture can be inferred."""
    torch.manual_seed(1)
    config = TokenizerConfig(codebook_dim=8, base_channels=32, channel_multipliers=(1, 1, 1, 1, 2), num_res_blocks=1)
    return BSQTokenizer(config).eval()
