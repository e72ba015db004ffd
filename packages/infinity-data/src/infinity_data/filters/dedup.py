"""Duplicate removal: exact (sha256 of bytes), near (pHash within a Hamming radius) and optional caption duplicates.

Decisions are made in input order: the first occurrence (lowest shard index, then position in the shard) is kept,
so a resumed run makes exactly the same decisions as an uninterrupted one. Reason codes: ``dedup:exact``,
``dedup:near``, ``dedup:caption``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from ..hashing import NearDuplicateIndex

__all__ = ["DedupConfig", "DedupState"]


@dataclass(frozen=True, kw_only=True)
class DedupConfig:
    """``near_radius`` is in bits out of 64 (pHash); 0 means identical perceptual hashes only."""

    exact: bool = True
    near: bool = True
    near_radius: int = 4
    caption: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.near_radius < 32:
            raise ValueError(f"filters.dedup.near_radius must be in [0, 32) bits, got {self.near_radius}")


def caption_digest(caption: str) -> str:
    """Digest of a whitespace/case-normalised caption."""
    return hashlib.sha1(" ".join(caption.lower().split()).encode()).hexdigest()[:16]


class DedupState:
    """Everything kept so far; ``check`` returns a reason code for a duplicate, else registers the sample."""

    def __init__(self, config: DedupConfig) -> None:
        self.config = config
        self._sha: set[str] = set()
        self._captions: set[str] = set()
        self._near = NearDuplicateIndex(config.near_radius)

    def check(self, sha256: str, phash: int | None, caption: str) -> str | None:
        """Reason code if this sample duplicates a kept one; otherwise record it as kept and return ``None``."""
        if self.config.exact and sha256 in self._sha:
            return "exact"
        if self.config.near and phash is not None and self._near.find(phash) is not None:
            return "near"
        digest = caption_digest(caption) if self.config.caption else ""
        if self.config.caption and digest in self._captions:
            return "caption"
        self.add(sha256, phash, digest)
        return None

    def add(self, sha256: str, phash: int | None, caption_hash: str = "") -> None:
        """Register a kept sample (also used to replay committed shards on resume)."""
        self._sha.add(sha256)
        if phash is not None and self.config.near:
            self._near.add(phash)
        if caption_hash:
            self._captions.add(caption_hash)

    def replay(self, entries: Iterable[tuple[str, int | None, str]]) -> None:
        """Register many kept samples ``(sha256, phash, caption_hash)``."""
        for sha, ph, cap in entries:
            self.add(sha, ph, cap)
