"""Official Infinity split files: ``splits/<h_div_w_template>_<num_examples>.jsonl``.

The official loader parses the file name as ``<template>_<count>`` (template with 3 decimals, count zero-padded to 9
digits, exactly one underscore), trusts the count, recomputes each line's template from ``h_div_w`` and skips lines
whose template differs from the file's ("Croupt data item"). We therefore bucket by ``nearest_template(h / w)`` of
the *stored* image and name files after their exact line counts.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .commit import OutputLayout, _write_atomic

__all__ = ["finalize_splits", "split_file_name"]


def split_file_name(template: str, count: int) -> str:
    """``"1.500", 2500 -> "1.500_000002500.jsonl"``."""
    return f"{float(template):.3f}_{count:09d}.jsonl"


def finalize_splits(layout: OutputLayout, shard_names: list[str]) -> dict[str, int]:
    """Merge the committed shards' split parts (in shard order) into split files; returns lines per template.

    Stale split files from earlier finalisations are removed, so the folder always matches the committed shards.
    """
    lines: dict[str, list[str]] = defaultdict(list)
    for name in shard_names:
        part = layout.split_parts / f"{name}.jsonl"
        if not part.is_file():
            continue
        for raw in part.read_text(encoding="utf-8").splitlines():
            if raw.strip():
                entry = json.loads(raw)
                lines[entry["template"]].append(json.dumps(entry["line"], ensure_ascii=False))
    wanted = {split_file_name(t, len(v)): v for t, v in lines.items()}
    for existing in layout.splits.glob("*.jsonl"):
        if existing.name not in wanted:
            existing.unlink()
    for file_name, content in sorted(wanted.items()):
        path: Path = layout.splits / file_name
        data = ("\n".join(content) + "\n").encode("utf-8")
        if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
            _write_atomic(path, data)
    return {t: len(v) for t, v in sorted(lines.items())}
