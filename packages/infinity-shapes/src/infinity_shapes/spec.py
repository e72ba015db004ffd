"""What a ShapesT2I prompt asks for: the vocabulary, prompt specs, and caption <-> spec conversion.

A prompt names one or two *groups* of identical objects (colour + shape + count) and, for two groups, optionally
a spatial relation between them, e.g. ``"two red circles to the left of a blue square"``. Captions are generated
from specs and parsed back exactly, so the scorer can grade an image from its prompt text alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

#: RGB values of the palette. Few, saturated and far apart so a tiny tokenizer keeps them distinct.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}


@dataclass(frozen=True, kw_only=True)
class Shape:
    """A shape word: how the renderer draws it and the ideal mask the scorer matches detected objects against.

    ``draw(pen, cx, cy, r, fill)`` fills the shape inscribed in the square box of half-side ``r`` centred on
    (``cx``, ``cy``) with a ``PIL.ImageDraw`` pen; ``template(u, v)`` is True inside the same shape, for ``u`` (left
    to right) and ``v`` (top to bottom) in (0, 1) across the object's bounding box (broadcast arrays). The plural
    of ``name`` is ``name + "s"``.
    """

    name: str
    draw: Callable[..., None]
    template: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z]+", self.name) or self.name.endswith("s"):
            raise ValueError(f"a shape name is one lower-case word not ending in 's' (plural = name + 's'), got {self.name!r}")


def _box(cx: float, cy: float, r: float) -> tuple[float, float, float, float]:
    return cx - r, cy - r, cx + r, cy + r


CIRCLE = Shape(
    name="circle",
    draw=lambda pen, cx, cy, r, fill: pen.ellipse(_box(cx, cy, r), fill=fill),
    template=lambda u, v: (2 * u - 1) ** 2 + (2 * v - 1) ** 2 <= 1.0,
)
SQUARE = Shape(
    name="square",
    draw=lambda pen, cx, cy, r, fill: pen.rectangle(_box(cx, cy, r), fill=fill),
    template=lambda u, v: np.ones_like(u * v, dtype=bool),
)
#: Upright isosceles triangle filling the box, apex at the top centre: its area is half the box.
TRIANGLE = Shape(
    name="triangle",
    draw=lambda pen, cx, cy, r, fill: pen.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill),
    template=lambda u, v: np.abs(2 * u - 1) <= v,
)
#: A shape the demo model never saw (not in :data:`SHAPES` by default; add it with :func:`extended_vocabulary`): the
#: upper half of a disc, flat side down, as wide as the box and half as tall, centred in it. Picked among new shapes
#: because the demo's frozen tokenizer reconstructs it well enough for the scorer (a diamond or a ring comes back
#: rounded into a circle; see bench/lora_new_word.py).
SEMICIRCLE = Shape(
    name="semicircle",
    draw=lambda pen, cx, cy, r, fill: pen.pieslice((cx - r, cy - r / 2, cx + r, cy + 3 * r / 2), 180, 360, fill=fill),
    template=lambda u, v: (2 * u - 1) ** 2 + (v - 1) ** 2 <= 1.0,  # in its own bounding box: the base is v = 1
)
#: The shape vocabulary (name -> :class:`Shape`), read at call time by the prompt sampler, the caption parser, the
#: renderer and the scorer, like :data:`COLORS`. The demo model knows these three.
SHAPES: dict[str, Shape] = {s.name: s for s in (CIRCLE, SQUARE, TRIANGLE)}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
NUMBER_WORDS: dict[int, str] = {1: "a", 2: "two", 3: "three"}
#: GenEval-style task families.
TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "count_position")

_RELATION_TEXT = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}


@dataclass(frozen=True, kw_only=True)
class ObjectGroup:
    """``count`` objects of one ``color`` and ``shape``."""

    color: str
    shape: str
    count: int = 1

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ValueError(f"unknown colour {self.color!r}; valid colours: {', '.join(COLORS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; valid shapes: {', '.join(SHAPES)}")
        if self.count not in NUMBER_WORDS:
            raise ValueError(f"count must be one of {sorted(NUMBER_WORDS)}, got {self.count}")

    @property
    def text(self) -> str:
        """``"a red circle"`` / ``"two red circles"``."""
        noun = self.shape if self.count == 1 else self.shape + "s"
        return f"{NUMBER_WORDS[self.count]} {self.color} {noun}"


@dataclass(frozen=True, kw_only=True)
class PromptSpec:
    """A whole prompt: one or two object groups and an optional relation ``groups[0] <relation> groups[1]``."""

    task: str
    groups: tuple[ObjectGroup, ...]
    relation: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; valid tasks: {', '.join(TASKS)}")
        if not 1 <= len(self.groups) <= 2:
            raise ValueError(f"a prompt has one or two object groups, got {len(self.groups)}")
        if self.relation is not None:
            if self.relation not in RELATIONS:
                raise ValueError(f"unknown relation {self.relation!r}; valid relations: {', '.join(RELATIONS)}")
            if len(self.groups) != 2:
                raise ValueError("a relation needs exactly two object groups")
        if len(self.groups) == 2 and (self.groups[0].color, self.groups[0].shape) == (
            self.groups[1].color,
            self.groups[1].shape,
        ):
            raise ValueError("the two groups of a prompt must differ in colour or shape")

    @property
    def caption(self) -> str:
        """The prompt text."""
        if len(self.groups) == 1:
            return self.groups[0].text
        joiner = f" {_RELATION_TEXT[self.relation]} " if self.relation else " and "
        return self.groups[0].text + joiner + self.groups[1].text


@contextmanager
def extended_vocabulary(
    *, colors: Mapping[str, tuple[int, int, int]] | None = None, shapes: Sequence[Shape] = ()
) -> Iterator[None]:
    """Add colours and shapes to the vocabulary inside a ``with`` block; they are removed again on exit.

    Inside the block the prompt sampler draws them (uniformly with the others), captions with them parse, the
    renderer draws them and the scorer detects them, e.g. ``with extended_vocabulary(shapes=[SEMICIRCLE]): ...``.

    Raises:
        ValueError: if a name is already in the vocabulary.
    """
    colors = dict(colors or {})
    taken = [c for c in colors if c in COLORS] + [s.name for s in shapes if s.name in SHAPES]
    if taken:
        raise ValueError(f"already in the vocabulary: {', '.join(taken)}")
    if len({s.name for s in shapes}) != len(shapes):
        raise ValueError(f"shape names repeat: {', '.join(s.name for s in shapes)}")
    COLORS.update(colors)
    SHAPES.update({s.name: s for s in shapes})
    try:
        yield
    finally:
        for name in colors:
            del COLORS[name]
        for s in shapes:
            del SHAPES[s.name]


def caption_words() -> list[str]:
    """Every word a ShapesT2I caption can contain (the vocabulary of the demo text encoder)."""
    words = set(NUMBER_WORDS.values()) | set(COLORS) | set(SHAPES) | {s + "s" for s in SHAPES} | {"and"}
    for text in _RELATION_TEXT.values():
        words.update(text.split())
    return sorted(words)


_WORD_TO_COUNT = {w: n for n, w in NUMBER_WORDS.items()} | {"an": 1, "one": 1}
_GROUP_RE = r"(a|an|one|two|three)\s+(\w+)\s+(\w+?)s?"
_REL_RE = "|".join(re.escape(t) for t in _RELATION_TEXT.values())
_CAPTION_RE = re.compile(rf"^\s*{_GROUP_RE}(?:\s+(and|{_REL_RE})\s+{_GROUP_RE})?\s*\.?\s*$", re.IGNORECASE)


def parse_caption(caption: str) -> PromptSpec:
    """Parse a ShapesT2I caption back into its :class:`PromptSpec` (the inverse of ``PromptSpec.caption``).

    Raises:
        ValueError: if the text is not a ShapesT2I caption, naming the expected grammar.
    """
    match = _CAPTION_RE.match(caption)
    if match is None:
        raise ValueError(
            f"not a ShapesT2I caption: {caption!r}; expected '<count> <colour> <shape>[s]' optionally followed by "
            f"'and' / 'to the left of' / 'to the right of' / 'above' / 'below' and a second group"
        )
    parts = [p.lower() if p else p for p in match.groups()]
    groups = [ObjectGroup(count=_WORD_TO_COUNT[parts[0]], color=parts[1], shape=_singular(parts[2]))]
    relation = None
    if parts[3] is not None:
        groups.append(ObjectGroup(count=_WORD_TO_COUNT[parts[4]], color=parts[5], shape=_singular(parts[6])))
        if parts[3] != "and":
            relation = next(k for k, v in _RELATION_TEXT.items() if v == parts[3])
    return PromptSpec(task=_infer_task(groups, relation), groups=tuple(groups), relation=relation)


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") and word[:-1] in SHAPES else word


def _infer_task(groups: list[ObjectGroup], relation: str | None) -> str:
    if len(groups) == 1:
        return "counting" if groups[0].count > 1 else "single_object"
    if relation is not None:
        return "count_position" if any(g.count > 1 for g in groups) else "position"
    if groups[0].shape == groups[1].shape:
        return "colors"
    return "two_object"


def sample_prompt(rng: np.random.Generator, *, tasks: tuple[str, ...] = TASKS, max_count: int = 3) -> PromptSpec:
    """Draw a random prompt: a task uniformly from ``tasks``, then its objects uniformly."""
    task = tasks[int(rng.integers(len(tasks)))]
    colors, shapes = list(COLORS), list(SHAPES)

    def group(count: int = 1, *, avoid: ObjectGroup | None = None, same_shape: bool = False) -> ObjectGroup:
        while True:
            shape = avoid.shape if same_shape and avoid else shapes[int(rng.integers(len(shapes)))]
            g = ObjectGroup(color=colors[int(rng.integers(len(colors)))], shape=shape, count=count)
            if avoid is None:
                return g
            clash = (g.color, g.shape) == (avoid.color, avoid.shape)
            if not clash and not (task == "two_object" and g.shape == avoid.shape):
                return g

    if task == "single_object":
        spec_groups: tuple[ObjectGroup, ...] = (group(),)
        relation = None
    elif task == "counting":
        spec_groups, relation = (group(int(rng.integers(2, max_count + 1))),), None
    elif task == "two_object":
        first = group()
        spec_groups, relation = (first, group(avoid=first)), None
    elif task == "colors":
        first = group()
        spec_groups, relation = (first, group(avoid=first, same_shape=True)), None
    elif task == "position":
        first = group()
        spec_groups = (first, group(avoid=first))
        relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
    else:  # count_position: the first group has 2..max_count objects
        first = group(int(rng.integers(2, max_count + 1)))
        spec_groups = (first, group(avoid=first))
        relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
    return PromptSpec(task=task, groups=spec_groups, relation=relation)
