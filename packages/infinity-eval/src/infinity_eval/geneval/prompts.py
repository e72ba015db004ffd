"""The 553-prompt GenEval protocol, shipped as package data, and its on-disk image layout."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
TASK_COUNTS = {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100, "color_attr": 100}
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
IMAGES_PER_PROMPT = 4


def _data(name: str) -> str:
    return resources.files("infinity_eval.geneval").joinpath("data", name).read_text(encoding="utf-8")


def load_metadata(path: str | Path | None = None) -> list[dict[str, Any]]:
    """GenEval prompt metadata: the vendored 553-line file, or ``path`` (same jsonl format), validated."""
    text = _data("evaluation_metadata.jsonl") if path is None else Path(path).read_text(encoding="utf-8")
    rows = []
    names = set(object_names())
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"GenEval metadata line {lineno} is not JSON: {exc}") from exc
        validate_metadata(row, names, where=f"line {lineno}")
        rows.append(row)
    return rows


def validate_metadata(row: dict[str, Any], names: set[str] | None = None, *, where: str = "metadata") -> None:
    """Raise ``ValueError`` if a metadata record is not a GenEval prompt spec."""
    names = names if names is not None else set(object_names())
    for key in ("tag", "prompt", "include"):
        if key not in row:
            raise ValueError(f"GenEval {where}: missing {key!r} in {row}")
    if row["tag"] not in TASKS:
        raise ValueError(f"GenEval {where}: unknown tag {row['tag']!r}; expected one of {TASKS}")
    for clause in [*row.get("include", []), *row.get("exclude", [])]:
        if clause.get("class") not in names:
            raise ValueError(f"GenEval {where}: unknown class {clause.get('class')!r} (not in object_names.txt)")
        if "color" in clause and clause["color"] not in COLORS:
            raise ValueError(f"GenEval {where}: unknown colour {clause['color']!r}")


def object_names() -> list[str]:
    """The 80 detector classes in COCO index order, with GenEval's names."""
    return [line.strip() for line in _data("object_names.txt").splitlines() if line.strip()]


def prompt_folder(root: str | Path, index: int) -> Path:
    """``<root>/<index:05d>`` — upstream's layout (``metadata.jsonl`` + ``samples/<nnnn>.png``)."""
    return Path(root) / f"{index:05d}"


def write_prompt_folder(root: str | Path, index: int, metadata: dict[str, Any]) -> Path:
    """Create ``<root>/<index:05d>/samples`` and its ``metadata.jsonl`` (one JSON object, as upstream)."""
    folder = prompt_folder(root, index)
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    (folder / "metadata.jsonl").write_text(json.dumps(metadata) + "\n", encoding="utf-8")
    return folder
