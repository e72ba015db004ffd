"""Scoring GenEval image folders: layout checks, per-image evaluation and rows for the summary."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from infinity_eval.geneval.prompts import IMAGES_PER_PROMPT, prompt_folder
from infinity_eval.geneval.scoring import Detection, GenEvalThresholds, evaluate, filter_detections
from infinity_eval.images import load_image

SAMPLE_RE = re.compile(r"^(\d+)\.(png|jpg|jpeg)$")

ColorClassifier = Callable[[Image.Image, Sequence[Detection], str], list[str]]


@dataclass(frozen=True, kw_only=True)
class GenEvalItem:
    """One image to score."""

    prompt_index: int
    sample_index: int
    path: Path
    metadata: Mapping[str, Any]


def collect_images(root: str | Path, metadata: Sequence[Mapping[str, Any]], *,
                   images_per_prompt: int = IMAGES_PER_PROMPT, allow_incomplete: bool = False) -> list[GenEvalItem]:
    """All images of an upstream-layout folder, checked against the prompt metadata.

    Every prompt folder ``<root>/<index:05d>`` must hold a ``metadata.jsonl`` equal to the protocol's record (else
    the images were generated for another prompts file) and exactly ``images_per_prompt`` samples
    ``samples/<n>.png|jpg``; missing ones raise unless ``allow_incomplete``. Unknown file names raise instead of
    being skipped silently as upstream does.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"GenEval image folder not found: {root}")
    items: list[GenEvalItem] = []
    missing: list[str] = []
    for index, meta in enumerate(metadata):
        folder = prompt_folder(root, index)
        meta_file = folder / "metadata.jsonl"
        if not meta_file.is_file():
            missing.append(f"{folder} (no metadata.jsonl)")
            continue
        stored = json.loads(meta_file.read_text(encoding="utf-8").splitlines()[0])
        if stored.get("prompt") != meta["prompt"] or stored.get("tag") != meta["tag"]:
            raise ValueError(
                f"prompts file mismatch: {meta_file} holds {stored.get('prompt')!r}, the protocol's prompt {index} is "
                f"{meta['prompt']!r}. Score with the prompts file the images were generated from (--prompts)."
            )
        samples_dir = folder / "samples"
        found: dict[int, Path] = {}
        for path in sorted(samples_dir.iterdir()) if samples_dir.is_dir() else []:
            if path.name.startswith("."):
                continue
            match = SAMPLE_RE.match(path.name)
            if not match:
                raise ValueError(f"unexpected file {path}: GenEval samples are named <n>.png or <n>.jpg")
            found[int(match.group(1))] = path
        for sample in range(images_per_prompt):
            if sample in found:
                items.append(GenEvalItem(prompt_index=index, sample_index=sample, path=found[sample], metadata=meta))
            else:
                missing.append(str(samples_dir / f"{sample:04d}.png"))
        extra = sorted(set(found) - set(range(images_per_prompt)))
        if extra:
            raise ValueError(f"{samples_dir} has samples {extra} beyond images_per_prompt={images_per_prompt}")
    if missing and not allow_incomplete:
        raise ValueError(f"GenEval set incomplete: {len(missing)} missing, e.g. {missing[0]}. "
                         "Finish generation or pass --allow-incomplete.")
    return items


def score_item(item: GenEvalItem, detector: Callable[[Image.Image], dict[str, list[Detection]]],
               classify_colors: ColorClassifier | None,
               thresholds: GenEvalThresholds | None = None) -> dict[str, Any]:
    """Detect, filter and evaluate one image; the row carries what the summary and the per-image table need."""
    thresholds = thresholds or GenEvalThresholds()
    image = load_image(item.path)
    objects = filter_detections(detector(image), item.metadata["tag"], thresholds)
    bound = None if classify_colors is None else (lambda objs, cls: classify_colors(image, objs, cls))
    correct, reason = evaluate(objects, item.metadata, bound, thresholds)
    return {
        "prompt_id": f"{item.prompt_index:05d}",
        "sample_index": item.sample_index,
        "tag": item.metadata["tag"],
        "prompt": item.metadata["prompt"],
        "correct": bool(correct),
        "reason": reason,
        "details": json.dumps({k: [[*d.box, d.score] for d in v] for k, v in objects.items()}),
    }
