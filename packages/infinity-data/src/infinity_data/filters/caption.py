"""Caption filter: samples whose caption is shorter than ``min_chars`` (after trimming) cannot train a text-to-image
model, and the trainer's readers skip them. Reason code: ``caption:too_short``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CaptionConfig"]


@dataclass(frozen=True, kw_only=True)
class CaptionConfig:
    """Minimum caption length in characters (whitespace-trimmed)."""

    min_chars: int = 1

    def __post_init__(self) -> None:
        if self.min_chars < 0:
            raise ValueError(f"filters.caption.min_chars must be >= 0, got {self.min_chars}")

    def reason(self, caption: str) -> str | None:
        return "too_short" if len(caption.strip()) < self.min_chars else None
