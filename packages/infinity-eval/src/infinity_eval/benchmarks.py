"""Benchmarks: prompt sets, per-sample seeds and on-disk image layouts.

Every image of a run is identified by ``(benchmark, prompt_id, sample_index)``; its generation seed is
:func:`sample_seed` of that triple and the run's global seed, so any subset can be (re)generated in any order, on any
worker, with the same result (Infinity's scripts seed once per prompt loop instead, which makes images depend on
prompt order).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from infinity_eval.geneval.prompts import load_metadata
from infinity_eval.hps import HPS_STYLES


@dataclass(frozen=True, kw_only=True)
class PromptRecord:
    """One prompt of a benchmark; ``metadata`` holds what its scorers need (GenEval clauses, HPS style ...)."""

    prompt_id: str
    prompt: str
    index: int
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, kw_only=True)
class SampleRef:
    """One image slot: its prompt, sample index, seed and path."""

    record: PromptRecord
    sample_index: int
    seed: int
    path: Path


def sample_seed(benchmark: str, prompt_id: str, sample_index: int, global_seed: int = 0) -> int:
    """A 63-bit seed from sha256 of ``benchmark|prompt_id|sample_index|global_seed`` (stable across machines)."""
    digest = hashlib.sha256(f"{benchmark}|{prompt_id}|{sample_index}|{global_seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def _package_text(package: str, *parts: str) -> str:
    return resources.files(package).joinpath(*parts).read_text(encoding="utf-8")


def load_prompts(source: str, *, limit: int | None = None) -> list[PromptRecord]:
    """Prompt records from a source name.

    - ``geneval`` — the vendored 553 GenEval prompts (ids ``00000``...).
    - ``imagereward`` — the vendored 100 ImageReward benchmark prompts (DiffusionDB ids).
    - ``hpsv21:<dir>`` — HPDv2 benchmark files ``<dir>/<style>.json`` (lists of 800 strings each); not shipped.
    - ``shapes[:<n>]`` — ``infinity_shapes.eval_prompts(n)`` captions (default 240; n // 6 per task, at least 1).
    - a path to a ``.jsonl`` of ``{"id", "prompt", ...}`` or a ``.txt`` with one prompt per line.
    """
    records: list[PromptRecord]
    if source == "geneval":
        records = [PromptRecord(prompt_id=f"{i:05d}", prompt=m["prompt"], index=i, metadata=m) for i, m in enumerate(load_metadata())]
    elif source == "imagereward":
        data = json.loads(_package_text("infinity_eval", "data", "imagereward_benchmark_prompts.json"))
        records = [PromptRecord(prompt_id=str(d["id"]), prompt=d["prompt"], index=i) for i, d in enumerate(data)]
    elif source.startswith("hpsv21:"):
        folder = Path(source.split(":", 1)[1])
        records = []
        for style in HPS_STYLES:
            path = folder / f"{style}.json"
            if not path.is_file():
                raise FileNotFoundError(f"HPSv2 benchmark prompts missing: {path} (the HPDv2 'benchmark/{style}.json' file)")
            for i, prompt in enumerate(json.loads(path.read_text(encoding="utf-8"))):
                records.append(PromptRecord(prompt_id=f"{style}/{i:05d}", prompt=prompt, index=len(records),
                                            metadata={"style": style, "style_index": i}))
    elif source == "shapes" or source.startswith("shapes:"):
        try:
            from infinity_shapes import eval_prompts
        except ImportError as exc:
            raise ImportError("the shapes prompt set needs infinity-shapes: pip install 'infinity-eval[shapes]'") from exc

        n = int(source.split(":", 1)[1]) if ":" in source else 240
        records = [PromptRecord(prompt_id=f"{i:05d}", prompt=spec.caption, index=i, metadata={"task": spec.task})
                   for i, spec in enumerate(eval_prompts(n))]
    else:
        records = _load_prompt_file(Path(source))
    if limit is not None:
        records = records[:limit]
    if not records:
        raise ValueError(f"prompt source {source!r} is empty")
    return records


def _load_prompt_file(path: Path) -> list[PromptRecord]:
    if not path.is_file():
        raise FileNotFoundError(
            f"prompt source {str(path)!r} is neither a built-in set (geneval, imagereward, hpsv21:<dir>, shapes) nor a file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory; give a .jsonl or .txt prompts file") from None
    if path.suffix == ".jsonl":
        records = []
        # line numbers count every line of the file (blank ones too), as an editor shows them
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                detail = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                raise ValueError(f"{path}:{number}: not valid JSON ({detail}); each line must be one JSON object") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ValueError(f"{path}:{number}: line {number} has no 'prompt' string; each line must be a JSON "
                                 'object such as {"id": "0001", "prompt": "a red circle"}')  # fmt: skip
            i = len(records)
            records.append(PromptRecord(prompt_id=str(row.get("id", f"{i:05d}")), prompt=row["prompt"], index=i,
                                        metadata={k: v for k, v in row.items() if k not in ("id", "prompt")}))
    else:
        records = [PromptRecord(prompt_id=f"{i:05d}", prompt=p.strip(), index=i)
                   for i, p in enumerate(ln for ln in text.splitlines() if ln.strip())]
    ids = [r.prompt_id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: prompt ids are not unique")
    return records


def prompts_digest(records: Sequence[PromptRecord]) -> str:
    """sha256 over ids and prompts, recorded with every run (detects a changed prompts file on resume)."""
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.prompt_id}\t{r.prompt}\n".encode())
    return h.hexdigest()


ALTERNATIVE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def image_path(root: Path, layout: str, record: PromptRecord, sample_index: int) -> Path:
    """Where a sample lives (written as PNG; an existing ``.jpg``/``.jpeg``/``.webp`` with the same stem is accepted).

    ``geneval``: upstream ``<NNNNN>/samples/<nnnn>.png``; ``hps``: hpsv2's ``<style>/<idx:05d>.png`` (one image per
    prompt); ``flat``: ``<prompt_id>/<nnnn>.png``.
    """
    if layout == "geneval":
        path = root / f"{record.index:05d}" / "samples" / f"{sample_index:04d}.png"
    elif layout == "hps":
        if sample_index:
            raise ValueError("the hps layout holds one image per prompt")
        path = root / record.metadata["style"] / f"{record.metadata['style_index']:05d}.png"
    else:
        path = root / record.prompt_id / f"{sample_index:04d}.png"
    if not path.is_file():
        for suffix in ALTERNATIVE_SUFFIXES[1:]:
            if path.with_suffix(suffix).is_file():
                return path.with_suffix(suffix)
    return path


def sample_refs(benchmark: str, records: Sequence[PromptRecord], images_per_prompt: int, root: Path, *,
                layout: str = "flat", global_seed: int = 0) -> list[SampleRef]:
    """All image slots of a benchmark, in canonical (prompt, sample) order."""
    return [SampleRef(record=r, sample_index=s, seed=sample_seed(benchmark, r.prompt_id, s, global_seed),
                      path=image_path(root, layout, r, s))
            for r in records for s in range(images_per_prompt)]
