"""Where every token of a multi-scale sequence lives: scale boundaries, block-causal mask, RoPE tables.

A :class:`ScaleLayout` is built once per (schedule, RoPE reference grid) and shared by the training forward, the
KV-cached sampler and the recompute-the-prefix debug mode, so all three see identical positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from bsq_tokenizer.schedules import get_scale_schedule, nearest_template

Schedule = tuple[tuple[int, int], ...]


def as_schedule(schedule: Sequence[Sequence[int]]) -> Schedule:
    """Normalise a schedule given as (h, w) pairs, or official (1, h, w) triples, to a tuple of (h, w)."""
    out = []
    for item in schedule:
        item = tuple(int(v) for v in item)
        if len(item) == 3:
            if item[0] != 1:
                raise ValueError(f"only image schedules (t = 1) are supported, got scale {item}")
            item = item[1:]
        if len(item) != 2 or min(item) < 1:
            raise ValueError(f"a scale must be a pair (h, w) of positive ints, got {item}")
        out.append(item)
    if not out:
        raise ValueError("the scale schedule is empty")
    return tuple(out)


def default_rope_reference(schedule: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The official RoPE reference grid: the last scale of the 1M schedule of the nearest aspect-ratio template.

    Schedules of the official tables (0.06M/0.25M/0.60M/1M) are prefixes of their template's 1M schedule, so every
    resolution of a template uses the same normalised positions (reference §2.6).
    """
    h, w = schedule[-1]
    template = nearest_template(h / w)
    ref = get_scale_schedule(template, "1M")[-1]
    return int(ref[0]), int(ref[1])


@dataclass(frozen=True)
class ScaleLayout:
    """Token layout of a scale schedule: scale k occupies tokens [starts[k], ends[k]) of the packed sequence."""

    schedule: Schedule
    rope_reference: tuple[int, int]

    @classmethod
    def build(
        cls, schedule: Sequence[Sequence[int]], rope_reference: tuple[int, int] | None = None
    ) -> ScaleLayout:
        """Layout for ``schedule``; the RoPE reference defaults to the official rule (:func:`default_rope_reference`)."""
        sched = as_schedule(schedule)
        ref = default_rope_reference(sched) if rope_reference is None else (int(rope_reference[0]), int(rope_reference[1]))
        return cls(schedule=sched, rope_reference=ref)

    @property
    def num_scales(self) -> int:
        return len(self.schedule)

    @cached_property
    def sizes(self) -> tuple[int, ...]:
        return tuple(h * w for h, w in self.schedule)

    @cached_property
    def ends(self) -> tuple[int, ...]:
        out, total = [], 0
        for n in self.sizes:
            total += n
            out.append(total)
        return tuple(out)

    @cached_property
    def starts(self) -> tuple[int, ...]:
        return (0, *self.ends[:-1])

    @property
    def total_tokens(self) -> int:
        return self.ends[-1]

    def prefix(self, num_scales: int) -> ScaleLayout:
        """The layout of the first ``num_scales`` scales (same RoPE reference, so positions are unchanged)."""
        return ScaleLayout(schedule=self.schedule[:num_scales], rope_reference=self.rope_reference)

    def scale_ids(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(L,) int64: the 0-based scale of every token."""
        return torch.repeat_interleave(torch.arange(self.num_scales), torch.tensor(self.sizes)).to(device)

    def block_causal_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(L, L) bool, True where query token may attend key token: scale(key) <= scale(query)."""
        ids = self.scale_ids(device)
        return ids[None, :] <= ids[:, None]

    def rope(
        self, head_dim: int, base: float, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (L, hd/2) float32 tables for the whole sequence."""
        from bitwise_ar.model.rope import rope_cos_sin

        return rope_cos_sin(self.schedule, self.rope_reference, head_dim, base, device)
