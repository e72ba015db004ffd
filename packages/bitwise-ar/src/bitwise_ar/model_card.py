"""The model card of a pipeline directory: ``README.md`` with YAML front matter, the way model hubs expect it.

``InfinityPipeline.save_pretrained`` writes it and ``from_pretrained`` reads it back. The front matter holds what
tools read (licence, library, task, tags, sampling defaults, image size, parameter counts) and the two texts a person
writes (``summary``, ``training``); the Markdown body repeats them for people. Every value is written as JSON, which is
valid YAML, so the file needs no YAML writer; it is read with PyYAML, so a hand-edited card loads too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CARD_FILE", "ModelCard", "read_model_card", "render_model_card"]

CARD_FILE = "README.md"
_FENCE = "---"


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """What a pipeline's files cannot say: what the model is and how it was trained (kept across save/load)."""

    summary: str = "An Infinity bitwise autoregressive text-to-image pipeline (arXiv 2412.04431)."
    training: str = "Not recorded."
    license: str = "mit"
    tags: tuple[str, ...] = ()


def render_model_card(card: ModelCard, *, name: str, defaults: dict[str, Any], parameters: dict[str, int]) -> str:
    """The README.md text for a pipeline named ``name`` with stored ``defaults`` (``PipelineDefaults.to_dict()``)."""
    sampling = defaults["sampling"]
    size = defaults.get("image_size")
    front = {
        "license": card.license,
        "library_name": "bitwise-ar",
        "pipeline_tag": "text-to-image",
        "tags": ["infinity", "bitwise-autoregressive", *card.tags],
        "summary": card.summary,
        "training": card.training,
        "sampling": sampling,
        "image_size": size,
        "resolution": None if size else defaults["resolution"],
        "aspect_ratio": None if size else defaults["aspect_ratio"],
        "parameters": parameters,
    }
    lines = [_FENCE, *(f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in front.items()
                       if value is not None), _FENCE]  # fmt: skip
    shape = f"{size[0]}×{size[1]} pixels" if size else f"{defaults['resolution']} at aspect ratio {defaults['aspect_ratio']}"
    counts = ", ".join(f"{part} {count:,}" for part, count in parameters.items())
    licence = "MIT" if card.license.lower() == "mit" else card.license
    lines += [
        "",
        f"# {name}",
        "",
        card.summary,
        "",
        f"Parameters: {counts}. Output: {shape}.",
        "",
        "## Use",
        "",
        "```bash",
        f'bitwise-ar generate "two red circles to the left of a blue square" --weights path/to/{name} -o out.png',
        "```",
        "",
        "## Training",
        "",
        card.training,
        "",
        "## Sampling defaults",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| `{key}` | {json.dumps(value)} |" for key, value in sampling.items()),
        "",
        "## Licence",
        "",
        f"{licence}.",
        "",
    ]
    return "\n".join(lines)


def read_model_card(path: str | Path) -> ModelCard:
    """The :class:`ModelCard` of a README.md written by :func:`render_model_card` (or by hand, same front matter)."""
    text = Path(path).read_text(encoding="utf-8")
    parts = text.split(f"\n{_FENCE}\n", 1)
    if not text.startswith(_FENCE + "\n") or len(parts) != 2:
        raise ValueError(f"{path}: a model card starts with YAML front matter between '---' lines")
    try:
        front = yaml.safe_load(parts[0][len(_FENCE) + 1 :]) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: the front matter is not valid YAML ({err})") from None
    if not isinstance(front, dict):
        raise ValueError(f"{path}: the front matter must be a mapping, got {type(front).__name__}")
    default = ModelCard()
    builtin = {"infinity", "bitwise-autoregressive"}
    return ModelCard(
        summary=str(front.get("summary", default.summary)),
        training=str(front.get("training", default.training)),
        license=str(front.get("license", default.license)),
        tags=tuple(str(t) for t in front.get("tags", ()) if t not in builtin),
    )
