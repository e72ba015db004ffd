"""GenEval scoring: detection filtering, clause checks, relative position and the summary table.

A re-implementation of djghosh13/geneval ``evaluation/evaluate_images.py`` and ``summary_scores.py`` with the
original thresholds: score > 0.3 (> 0.9 for counting prompts), at most 16 objects per class, NMS off, colour and
position checked only on the ``count`` most confident objects, position offsets shrunk by 0.1·(wA + wB, hA + hB)
and a relation holding when the normalised offset component exceeds 0.5. The overall score is the unweighted mean of
the six task accuracies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infinity_eval.geneval.prompts import COLORS, TASKS


@dataclass(frozen=True, kw_only=True)
class GenEvalThresholds:
    """Scoring constants; the defaults are GenEval's."""

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0  # 1.0 disables NMS, as upstream
    position_threshold: float = 0.1

    def __post_init__(self) -> None:
        for name in ("threshold", "counting_threshold", "max_overlap"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")


@dataclass(frozen=True, kw_only=True)
class Detection:
    """One detected object: ``box`` is ``(x1, y1, x2, y2)`` in image pixels; ``mask`` an optional bool ``(H, W)``."""

    box: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = field(default=None, compare=False)


ColorFn = Callable[[Sequence[Detection], str], list[str]]
"""Colour classifier bound to one image: (objects, class name) -> one colour name per object."""


def compute_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU with GenEval's inclusive-pixel (+1) convention."""
    def area(b: Sequence[float]) -> float:
        return max(b[2] - b[0] + 1, 0) * max(b[3] - b[1] + 1, 0)

    inter = area([max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])])
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0.0


def filter_detections(raw: Mapping[str, Iterable[Detection]], tag: str,
                      thresholds: GenEvalThresholds = GenEvalThresholds()) -> dict[str, list[Detection]]:
    """Per class: keep score > threshold (counting: > counting_threshold), sort by score, cap, optional NMS."""
    limit = thresholds.counting_threshold if tag == "counting" else thresholds.threshold
    kept: dict[str, list[Detection]] = {}
    for classname, dets in raw.items():
        dets = list(dets)
        # Order exactly as upstream, ties included: numpy's argsort of the float32 scores, reversed.
        order = np.argsort(np.asarray([d.score for d in dets], dtype=np.float32))[::-1]
        ordered = [dets[i] for i in order if dets[i].score > limit][: thresholds.max_objects]
        chosen: list[Detection] = []
        while ordered:
            best = ordered.pop(0)
            chosen.append(best)
            if thresholds.max_overlap < 1:
                ordered = [d for d in ordered if compute_iou(best.box, d.box) < thresholds.max_overlap]
        if chosen:
            kept[classname] = chosen
    return kept


def relative_position(obj_a: Detection, obj_b: Detection, position_threshold: float = 0.1) -> set[str]:
    """Relations of A relative to B ("left of", "right of", "above", "below"), factoring in object sizes."""
    boxes = np.array([obj_a.box, obj_b.box], dtype=np.float64).reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - position_threshold * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def evaluate(objects: Mapping[str, Sequence[Detection]], metadata: Mapping[str, Any], classify_colors: ColorFn | None,
             thresholds: GenEvalThresholds = GenEvalThresholds()) -> tuple[bool, str]:
    """Check filtered detections against one prompt's clauses; returns ``(correct, reason)`` as upstream.

    ``include`` clauses are ANDed and need at least ``count`` objects; ``exclude`` clauses fail at ``>= count``.
    """
    correct = True
    reasons: list[str] = []
    matched_groups: list[Sequence[Detection] | None] = []
    for req in metadata.get("include", []):
        classname = req["class"]
        matched = True
        found = list(objects.get(classname, []))[: req["count"]]
        if len(found) < req["count"]:
            correct = matched = False
            reasons.append(f"expected {classname}>={req['count']}, found {len(found)}")
        else:
            if "color" in req:
                if classify_colors is None:
                    raise ValueError(f"prompt {metadata.get('prompt')!r} needs a colour classifier")
                colors = classify_colors(found, classname)
                if colors.count(req["color"]) < req["count"]:
                    correct = matched = False
                    reasons.append(
                        f"expected {req['color']} {classname}>={req['count']}, found "
                        f"{colors.count(req['color'])} {req['color']}; and "
                        + ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                    )
            if "position" in req and matched:
                expected_rel, target_group = req["position"]
                if matched_groups[target_group] is None:
                    correct = matched = False
                    reasons.append(f"no target for {classname} to be {expected_rel}")
                else:
                    for obj in found:
                        for target in matched_groups[target_group]:  # type: ignore[union-attr]
                            true_rels = relative_position(obj, target, thresholds.position_threshold)
                            if expected_rel not in true_rels:
                                correct = matched = False
                                reasons.append(f"expected {classname} {expected_rel} target, found "
                                               f"{' and '.join(sorted(true_rels))} target")
                                break
                        if not matched:
                            break
        matched_groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        classname = req["class"]
        if len(objects.get(classname, [])) >= req["count"]:
            correct = False
            reasons.append(f"expected {classname}<{req['count']}, found {len(objects[classname])}")
    return correct, "\n".join(reasons)


@dataclass(frozen=True, kw_only=True)
class GenEvalSummary:
    """Task accuracies, the overall score (mean over tasks) and the secondary percentages."""

    task_scores: dict[str, float]
    task_counts: dict[str, tuple[int, int]]
    overall: float
    correct_images: float
    correct_prompts: float
    num_images: int
    num_prompts: int

    def metrics(self, prefix: str = "geneval") -> dict[str, float]:
        """Flat metric dict: ``geneval/overall``, ``geneval/<task>``, ``geneval/correct_images`` ..."""
        out = {f"{prefix}/overall": self.overall, f"{prefix}/correct_images": self.correct_images,
               f"{prefix}/correct_prompts": self.correct_prompts}
        out.update({f"{prefix}/{task}": score for task, score in self.task_scores.items()})
        return out

    def table(self) -> str:
        """Plain-text summary in the layout of upstream ``summary_scores.py``."""
        lines = [f"Total images: {self.num_images}", f"Total prompts: {self.num_prompts}",
                 f"% correct images: {self.correct_images:.2%}", f"% correct prompts: {self.correct_prompts:.2%}", ""]
        for task, score in self.task_scores.items():
            ok, n = self.task_counts[task]
            lines.append(f"{task:<16} = {score:.2%} ({ok} / {n})")
        lines += ["", f"Overall score (avg. over tasks): {self.overall:.5f}"]
        return "\n".join(lines)


def summarize(rows: Iterable[Mapping[str, Any]]) -> GenEvalSummary:
    """Summary of per-image rows with keys ``tag``, ``prompt_id`` (or ``metadata``) and ``correct``."""
    rows = list(rows)
    if not rows:
        raise ValueError("no GenEval results to summarise")
    by_task: dict[str, list[bool]] = {}
    by_prompt: dict[str, list[bool]] = {}
    for row in rows:
        by_task.setdefault(row["tag"], []).append(bool(row["correct"]))
        key = str(row.get("prompt_id", row.get("metadata")))
        by_prompt.setdefault(key, []).append(bool(row["correct"]))
    order = [t for t in TASKS if t in by_task] + [t for t in by_task if t not in TASKS]
    task_scores = {t: float(np.mean(by_task[t])) for t in order}
    return GenEvalSummary(
        task_scores=task_scores,
        task_counts={t: (int(sum(by_task[t])), len(by_task[t])) for t in order},
        overall=float(np.mean(list(task_scores.values()))),
        correct_images=float(np.mean([bool(r["correct"]) for r in rows])),
        correct_prompts=float(np.mean([any(v) for v in by_prompt.values()])),
        num_images=len(rows),
        num_prompts=len(by_prompt),
    )
