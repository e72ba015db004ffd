"""ShapesEval: a GenEval-style scorer for ShapesT2I computed analytically from the pixels.

Detection: every pixel is assigned to the nearest palette colour or to the background (and to nothing if it is far
from all of them); each colour's pixels are split into 4-connected components; components smaller than
``min_area`` are noise. A component's shape is the ideal shape of the vocabulary (circle / square / upright triangle,
plus any registered with :func:`~infinity_shapes.spec.extended_vocabulary`), drawn in the component's bounding box,
that overlaps its mask best (IoU).

Checks per prompt (GenEval's families, all must pass for the prompt to count as correct):
``object`` every named shape is present (any colour); ``color`` it is present in the named colour; ``count`` exactly
the named number of (colour, shape) objects (stricter than GenEval, which only asks for "at least" outside its
counting task); ``position`` every object of the first group lies strictly on the named side of every object of the
second. ``overall`` is the mean over task families of the per-family accuracy, as in GenEval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from infinity_shapes.render import BACKGROUND
from infinity_shapes.spec import COLORS, SHAPES, TASKS, PromptSpec

CHECKS: tuple[str, ...] = ("object", "color", "count", "position")


@dataclass(frozen=True, kw_only=True)
class Detection:
    """One detected object; centre (x right, y down) and area in pixels."""

    color: str
    shape: str
    cx: float
    cy: float
    area: int


@dataclass(frozen=True, kw_only=True)
class ImageScore:
    """Sub-check outcomes (None = not applicable to this prompt) and the prompt-level verdict."""

    task: str
    checks: dict[str, bool | None]
    detections: tuple[Detection, ...]

    @property
    def correct(self) -> bool:
        """True when every applicable check passed."""
        return all(v for v in self.checks.values() if v is not None)


@dataclass(frozen=True, kw_only=True)
class ShapesEvalResult:
    """Aggregate over prompts: ``overall`` with a bootstrap confidence interval, per-task and per-check rates."""

    overall: float
    ci_low: float
    ci_high: float
    confidence: float
    num_prompts: int
    per_task: dict[str, float]
    per_check: dict[str, float]

    def as_dict(self) -> dict:
        """Plain-JSON form."""
        return {
            "overall": self.overall,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": self.confidence,
            "num_prompts": self.num_prompts,
            "per_task": dict(self.per_task),
            "per_check": dict(self.per_check),
        }


def _label_components(mask_HW: np.ndarray) -> np.ndarray:
    """4-connected component labels (−1 outside ``mask``) by min-label propagation; fine at <= 512 px."""
    h, w = mask_HW.shape
    big = h * w
    labels = np.where(mask_HW, np.arange(big).reshape(h, w), big)
    while True:
        nxt = labels.copy()
        nxt[1:, :] = np.minimum(nxt[1:, :], labels[:-1, :])
        nxt[:-1, :] = np.minimum(nxt[:-1, :], labels[1:, :])
        nxt[:, 1:] = np.minimum(nxt[:, 1:], labels[:, :-1])
        nxt[:, :-1] = np.minimum(nxt[:, :-1], labels[:, 1:])
        nxt = np.where(mask_HW, nxt, big)
        if np.array_equal(nxt, labels):
            break
        labels = nxt
    return np.where(mask_HW, labels, -1)


def classify_shape(mask_HW: np.ndarray) -> str:
    """The shape of :data:`SHAPES` whose ideal mask (inscribed in the mask's bounding box) has the highest IoU.

    Template matching keeps working on soft, slightly rounded shapes (tokenizer reconstructions, generated images),
    where single features such as the fill ratio overlap between classes.
    """
    ys, xs = np.nonzero(mask_HW)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = mask_HW[y0:y1, x0:x1]
    h, w = box.shape
    v = (np.arange(h)[:, None] + 0.5) / h  # 0 (top) .. 1 (bottom)
    u = (np.arange(w)[None, :] + 0.5) / w  # 0 (left) .. 1 (right)
    # ties go to the square, then the vocabulary's order (square, circle, triangle is the order this scorer always used)
    names = sorted(SHAPES, key=lambda name: name != "square")

    def iou(name: str) -> float:
        template = SHAPES[name].template(u, v)
        return float(np.count_nonzero(template & box)) / float(np.count_nonzero(template | box))

    return max(names, key=iou)


def detect_objects(image: Image.Image | np.ndarray, *, min_area: float = 0.006, max_distance: float = 100.0) -> list[Detection]:
    """Find the coloured objects in an RGB image.

    Args:
        image: PIL image or (H, W, 3) uint8 array.
        min_area: smallest object, as a fraction of the image area; smaller blobs are ignored.
        max_distance: a pixel farther than this (RGB Euclidean) from every palette colour belongs to nothing.
    """
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
    names = list(COLORS)
    palette = np.array([*COLORS.values(), BACKGROUND], dtype=np.float32)
    dist = np.linalg.norm(rgb[:, :, None, :] - palette[None, None], axis=-1)
    nearest = dist.argmin(-1)
    valid = dist.min(-1) < max_distance
    min_pixels = min_area * rgb.shape[0] * rgb.shape[1]
    found: list[Detection] = []
    for index, name in enumerate(names):
        mask = (nearest == index) & valid
        if mask.sum() < min_pixels:
            continue
        labels = _label_components(mask)
        ids, counts = np.unique(labels[labels >= 0], return_counts=True)
        for label, count in zip(ids, counts):
            if count < min_pixels:
                continue
            component = labels == label
            ys, xs = np.nonzero(component)
            found.append(
                Detection(color=name, shape=classify_shape(component), cx=float(xs.mean()), cy=float(ys.mean()), area=int(count))
            )
    return found


def score_image(image: Image.Image | np.ndarray, spec: PromptSpec, **detect_kwargs: float) -> ImageScore:
    """Grade one image against its prompt spec."""
    detections = detect_objects(image, **detect_kwargs)

    def matching(group) -> list[Detection]:
        return [d for d in detections if d.color == group.color and d.shape == group.shape]

    checks: dict[str, bool | None] = {
        "object": all(any(d.shape == g.shape for d in detections) for g in spec.groups),
        "color": all(len(matching(g)) > 0 for g in spec.groups),
        "count": all(len(matching(g)) == g.count for g in spec.groups),
        "position": None,
    }
    if spec.relation is not None:
        a, b = matching(spec.groups[0]), matching(spec.groups[1])
        if not a or not b:
            checks["position"] = False
        else:
            checks["position"] = {
                "left of": max(d.cx for d in a) < min(d.cx for d in b),
                "right of": min(d.cx for d in a) > max(d.cx for d in b),
                "above": max(d.cy for d in a) < min(d.cy for d in b),
                "below": min(d.cy for d in a) > max(d.cy for d in b),
            }[spec.relation]
    return ImageScore(task=spec.task, checks=checks, detections=tuple(detections))


def _overall(correct: np.ndarray, task_ids: np.ndarray, num_tasks: int) -> float:
    per_task = [correct[task_ids == t].mean() for t in range(num_tasks) if np.any(task_ids == t)]
    return float(np.mean(per_task))


def aggregate(
    scores: Sequence[ImageScore], *, num_bootstrap: int = 2000, confidence: float = 0.95, seed: int = 0
) -> ShapesEvalResult:
    """Overall score (mean of per-task accuracies) with a percentile bootstrap CI over prompts."""
    if not scores:
        raise ValueError("aggregate() needs at least one scored image")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tasks_present = [t for t in TASKS if any(s.task == t for s in scores)]
    task_ids = np.array([tasks_present.index(s.task) for s in scores])
    correct = np.array([s.correct for s in scores], dtype=np.float64)
    overall = _overall(correct, task_ids, len(tasks_present))
    rng = np.random.Generator(np.random.PCG64(seed))
    boots = np.empty(num_bootstrap)
    for i in range(num_bootstrap):
        pick = rng.integers(0, len(scores), len(scores))
        boots[i] = _overall(correct[pick], task_ids[pick], len(tasks_present))
    alpha = (1.0 - confidence) / 2
    per_check = {}
    for check in CHECKS:
        values = [s.checks[check] for s in scores if s.checks[check] is not None]
        if values:
            per_check[check] = float(np.mean(values))
    return ShapesEvalResult(
        overall=overall,
        ci_low=float(np.quantile(boots, alpha)),
        ci_high=float(np.quantile(boots, 1 - alpha)),
        confidence=confidence,
        num_prompts=len(scores),
        per_task={t: float(correct[task_ids == i].mean()) for i, t in enumerate(tasks_present)},
        per_check=per_check,
    )
