"""Shared tiny components for the bitwise-ar model/sampling tests (fixture names prefixed ``ar_``)."""

from __future__ import annotations

import pytest
from bitwise_ar.layout import ScaleLayout
from bitwise_ar.testing import tiny_transformer

# A 128x128-pixel 1:1 schedule (the first five scales of the official 1:1 table): 121 tokens.
SMALL_SCHEDULE = [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8)]


@pytest.fixture(scope="session")
def ar_model():
    return tiny_transformer(seed=0)


@pytest.fixture(scope="session")
def ar_layout() -> ScaleLayout:
    return ScaleLayout.build(SMALL_SCHEDULE, rope_reference=(64, 64))
