"""Text features for training: a hash encoder for tests and a per-caption cache for a frozen encoder.

Encoders have ``encode(captions) -> PackedText`` (valid tokens incl. ``</s>``, as the official code keeps them), like
:class:`bitwise_ar.text_encoder.T5TextEncoder`. :class:`CachedTextEncoder` memoises features per caption.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence

import torch

from bitwise_ar.model.text import PackedText

logger = logging.getLogger(__name__)


class HashTextEncoder:
    """Deterministic random features per word (no model, no download): for tests and smoke runs only."""

    def __init__(self, channels: int, *, max_len: int = 64) -> None:
        self.channels, self.max_len = channels, max_len

    def _word(self, word: str, position: int) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(f"{word}|{position}".encode()).digest()[:8], "little")
        return torch.randn(self.channels, generator=torch.Generator().manual_seed(seed))

    def encode(self, captions: Sequence[str]) -> PackedText:
        """Captions -> packed features."""
        feats = []
        for caption in captions:
            words = [*(caption.lower().split() or [""])[: self.max_len - 1], "</s>"]
            feats.append(torch.stack([self._word(w, i) for i, w in enumerate(words)]))
        return PackedText.from_list(feats)


class CachedTextEncoder:
    """Memoise per-caption features of a frozen encoder (LRU of ``capacity`` captions)."""

    def __init__(self, encoder, *, capacity: int = 100_000) -> None:
        self.encoder, self.capacity = encoder, capacity
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def encode(self, captions: Sequence[str]) -> PackedText:
        """Captions -> packed features, encoding only captions not seen before."""
        missing = list(dict.fromkeys(c for c in captions if c not in self.cache))
        if missing:
            for caption, feats in zip(missing, self.encoder.encode(missing).split(), strict=True):
                self.cache[caption] = feats.cpu()
            while len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        for caption in captions:
            self.cache.move_to_end(caption)
        return PackedText.from_list([self.cache[c] for c in captions])
