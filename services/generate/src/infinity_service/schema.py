"""The ``POST /v1/images`` request: parsing and validation with messages that say how to fix the input."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import NATIVE, Limits

__all__ = ["ImageRequest", "RequestError", "parse_image_request"]

_FIELDS = {
    "prompt", "negative_prompt", "aspect_ratio", "resolution", "cfg", "tau", "top_k", "top_p", "seed", "count",
    "response_format",
}  # fmt: skip
MAX_SEED = 2**63 - 1


class RequestError(ValueError):
    """Invalid client input; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, kw_only=True)
class ImageRequest:
    """A validated request. ``h_div_w`` is the aspect ratio as height / width; ``image_size`` (H, W) is set for the
    "native" resolution (the model's own size), ``None`` for named resolutions."""

    prompts: tuple[str, ...]
    negative_prompt: str | None
    aspect_ratio: str
    h_div_w: float
    resolution: str
    image_size: tuple[int, int] | None
    cfg: float | tuple[float, ...]  # a tuple only when it is the model's stored per-scale default
    tau: float | tuple[float, ...]
    top_k: int
    top_p: float
    seed: int
    count: int
    response_format: str

    @property
    def num_images(self) -> int:
        """Images this request produces (prompts x count)."""
        return len(self.prompts) * self.count

    def items(self) -> list[tuple[int, str, int]]:
        """(index, prompt, seed) of every image: prompt i, copy j gets seed + j (so copy 0 uses ``seed``)."""
        out = []
        for i, prompt in enumerate(self.prompts):
            for j in range(self.count):
                out.append((i * self.count + j, prompt, (self.seed + j) % (MAX_SEED + 1)))
        return out


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name, default)
    if value is None:
        value = default
    if value is default and isinstance(default, list | tuple):  # the model's stored per-scale values, used as they are
        return tuple(float(v) for v in default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError(f"'{name}' must be a number in [{lo:g}, {hi:g}], got {value!r}")
    if not lo <= value <= hi:
        raise RequestError(f"'{name}' must be in [{lo:g}, {hi:g}], got {value:g}")
    return float(value)


def _integer(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"'{name}' must be an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise RequestError(f"'{name}' must be in [{lo}, {hi}], got {value}")
    return int(value)


def _text(value: Any, name: str, limits: Limits) -> str:
    if not isinstance(value, str):
        raise RequestError(f"'{name}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RequestError(f"'{name}' is empty; describe the image to generate")
    if len(value) > limits.max_prompt_chars:
        raise RequestError(f"'{name}' has {len(value)} characters; the limit is {limits.max_prompt_chars}", status=413)
    return value


def parse_image_request(
    body: Any, limits: Limits, defaults: dict[str, Any], *, resolutions: Sequence[str] | None = None
) -> ImageRequest:
    """Validate a decoded JSON body; ``defaults`` fills fields the client left out (cfg, tau, resolution, ...).

    ``resolutions``: those the model can serve (default: the limits'); "native" needs ``defaults["native_size"]``.
    """
    from bsq_tokenizer.schedules import TEMPLATES, parse_aspect_ratio

    if not isinstance(body, dict):
        raise RequestError('the request body must be a JSON object such as {"prompt": "a red circle"}', status=400)
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; valid fields: {sorted(_FIELDS)}")
    if "prompt" not in body or body["prompt"] is None:
        raise RequestError("'prompt' is required: a string, or a list of strings")
    raw = body["prompt"]
    if isinstance(raw, list):
        if not raw:
            raise RequestError("'prompt' is an empty list; give at least one prompt")
        if len(raw) > limits.max_prompts:
            raise RequestError(f"{len(raw)} prompts; the limit per request is {limits.max_prompts}", status=413)
        prompts = tuple(_text(p, "prompt", limits) for p in raw)
    else:
        prompts = (_text(raw, "prompt", limits),)
    negative = body.get("negative_prompt")
    if negative is not None:
        negative = _text(negative, "negative_prompt", limits)

    allowed = list(resolutions if resolutions is not None else limits.resolutions)
    resolution = body.get("resolution", defaults.get("resolution", allowed[0] if allowed else None))
    if resolution not in allowed:
        raise RequestError(f"'resolution' must be one of {allowed}, got {resolution!r}")
    image_size = None
    if resolution == NATIVE:
        height, width = (int(v) for v in defaults["native_size"])
        image_size = (height, width)
        divisor = math.gcd(height, width)
        native_aspect = f"{width // divisor}:{height // divisor}"

    aspect = body.get("aspect_ratio")
    if aspect is None:
        aspect = native_aspect if image_size else defaults.get("aspect_ratio", "1:1")
    if isinstance(aspect, int | float) and not isinstance(aspect, bool):
        aspect = str(aspect)
    try:
        h_div_w = parse_aspect_ratio(aspect)
    except ValueError as err:
        raise RequestError(f"'aspect_ratio': {err}") from None
    if image_size is not None:
        if abs(h_div_w - image_size[0] / image_size[1]) > 0.01 * image_size[0] / image_size[1]:
            raise RequestError(
                f"'aspect_ratio' {aspect!r} does not match the model's native size {image_size[1]}x{image_size[0]} "
                f"(W:H {native_aspect}); leave it out, or choose a named resolution for other shapes"
            )
        aspect, h_div_w = native_aspect, image_size[0] / image_size[1]
    lo, hi = min(TEMPLATES), max(TEMPLATES)
    if image_size is None and not lo - 1e-3 <= h_div_w <= hi + 1e-3:
        raise RequestError(
            f"'aspect_ratio' {aspect!r} is h/w = {h_div_w:.3f}; supported shapes span 1:3 to 3:1 (h/w {lo} to {hi})"
        )
    cfg = _number(body, "cfg", defaults.get("cfg", 3.0), *limits.cfg_range)
    tau = _number(body, "tau", defaults.get("tau", 1.0), *limits.tau_range)
    top_k = _integer(body, "top_k", defaults.get("top_k", 900), 0, 1_000_000)
    top_p = _number(body, "top_p", defaults.get("top_p", 0.97), 0.0, 1.0)
    seed = _integer(body, "seed", 0, 0, MAX_SEED)
    count = _integer(body, "count", 1, 1, limits.max_count)
    if len(prompts) * count > limits.max_images_per_request:
        raise RequestError(
            f"{len(prompts)} prompt(s) x count {count} = {len(prompts) * count} images; the limit per request is "
            f"{limits.max_images_per_request}",
            status=413,
        )
    response_format = body.get("response_format", "json")
    if response_format not in ("json", "png"):
        raise RequestError(f"'response_format' must be 'json' or 'png', got {response_format!r}")
    if response_format == "png" and len(prompts) * count != 1:
        raise RequestError("'response_format': 'png' returns exactly one image; use 'json' for several")
    return ImageRequest(
        prompts=prompts, negative_prompt=negative, aspect_ratio=str(aspect), h_div_w=h_div_w, resolution=resolution,
        image_size=image_size, cfg=cfg, tau=tau, top_k=top_k, top_p=top_p, seed=seed, count=count, response_format=response_format,
    )  # fmt: skip
