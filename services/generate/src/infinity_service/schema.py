"""The ``POST /v1/images`` request and response: pydantic models (served as OpenAPI at ``/docs``), a JSON reader with
limits, and validation with messages that say how to fix the input.

Validation has two layers: :class:`ImageRequestBody` holds what is fixed (field names and types, seed / top_k / top_p
ranges, the response formats); :func:`parse_image_request` adds what the service's configuration decides (prompt
length and count, cfg / tau ranges, resolutions, the model's native size) and fills defaults from the model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bsq_tokenizer.schedules import TEMPLATES, parse_aspect_ratio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import NATIVE, Limits

__all__ = [
    "ErrorResponse",
    "ImageRequest",
    "ImageRequestBody",
    "ImageResult",
    "ImagesResponse",
    "RequestError",
    "parse_image_request",
    "parse_json_body",
]

MAX_SEED = 2**63 - 1
MAX_JSON_DEPTH = 32  # a request body is two levels deep; anything far deeper is not a request
MAX_NUMBER_CHARS = 100  # the longest number literal accepted (a seed has at most 19 digits)


class RequestError(ValueError):
    """Invalid client input; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------------- the schema

_FINITE = {"strict": True, "allow_inf_nan": False}


class ImageRequestBody(BaseModel):
    """The JSON body of ``POST /v1/images`` and ``POST /v1/images/stream``. Fields left out (or null) take the
    model's stored defaults; ranges that depend on the service's configuration are listed by ``GET /v1/models``."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"prompt": "two red circles to the left of a blue square", "seed": 1},
    ]})  # fmt: skip

    prompt: str | list[str] = Field(description="what to draw: one prompt, or a list (one image per prompt and copy)")
    negative_prompt: str | None = Field(None, description="what to steer away from (classifier-free guidance)")
    aspect_ratio: str | float | None = Field(None, description="W:H such as '16:9', or h/w as a number; 1:3 to 3:1")
    resolution: str | None = Field(None, description="'native' (the model's own size) or a named size such as '0.25M'")
    cfg: float | None = Field(None, description="classifier-free guidance scale (limits.cfg_range)", **_FINITE)
    tau: float | None = Field(None, description="sampling temperature (limits.tau_range)", **_FINITE)
    top_k: int | None = Field(None, ge=0, le=1_000_000, description="keep the k most likely values per bit; 0 = off")
    top_p: float | None = Field(None, ge=0.0, le=1.0, description="nucleus sampling mass; 0 = off", **_FINITE)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="copy j of a prompt uses seed + j")
    count: int | None = Field(None, ge=1, description="copies per prompt (limits.max_count)")
    response_format: Literal["json", "png"] = Field(
        "json", description="'json': base64 PNGs with their seeds; 'png': the one image as image/png"
    )


_FIELDS = sorted(ImageRequestBody.model_fields)


class ImageResult(BaseModel):
    """One generated image."""

    index: int = Field(description="position in the request: prompt i, copy j is index i * count + j")
    prompt: str
    seed: int
    width: int
    height: int
    png_base64: str
    batch_size: int = Field(description="images generated together with this one")
    warnings: list[str] = Field(default_factory=list, description="what the model could not follow in this prompt "
                                "(words its text encoder does not know)")


class RequestEcho(BaseModel):
    """The settings the images were made with (defaults filled in)."""

    aspect_ratio: str
    resolution: str
    cfg: float | list[float]
    tau: float | list[float]
    top_k: int
    top_p: float
    seed: int
    count: int


class Timings(BaseModel):
    queued_s: float
    total_s: float


class ImagesResponse(BaseModel):
    """The answer of ``POST /v1/images`` with ``response_format: "json"``."""

    model: str
    created: int
    request: RequestEcho
    images: list[ImageResult]
    timings: Timings
    warnings: list[str] = Field(default_factory=list, description="each distinct warning of the images, with its "
                                "prompt: words the text encoder does not know, which the images cannot follow")


class ErrorDetail(BaseModel):
    status: int
    message: str


class ErrorResponse(BaseModel):
    """Every error: the HTTP status and one sentence that says what to fix."""

    error: ErrorDetail


# ---------------------------------------------------------------------------------------------------- reading JSON


def _nesting_depth(text: str) -> int:
    """Deepest nesting of arrays/objects in ``text`` (strings skipped), found without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _number(kind: type) -> Any:
    def parse(literal: str) -> Any:
        if len(literal) > MAX_NUMBER_CHARS:
            raise RequestError(f"a number in the body has {len(literal)} characters; the limit is {MAX_NUMBER_CHARS}",
                               status=413)  # fmt: skip
        return kind(literal)

    return parse


def parse_json_body(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode a request body (its size is limited by the caller) with limits on nesting depth and number length.

    Every failure is a :class:`RequestError` (400 malformed, 413 over a limit), never a RecursionError or the
    ValueError of Python's 4,300-digit integer limit.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(f"malformed JSON body: not UTF-8 ({err.reason} at byte {err.start})", status=400) from None
    depth = _nesting_depth(text)
    if depth > max_depth:
        raise RequestError(f"the JSON body is nested {depth} levels deep; the limit is {max_depth}", status=413)
    try:
        return json.loads(text, parse_int=_number(int), parse_float=_number(float))
    except json.JSONDecodeError as err:
        raise RequestError(f"malformed JSON body: {err}", status=400) from None
    except (ValueError, RecursionError) as err:  # a RequestError from the number hooks passes through unchanged
        if isinstance(err, RequestError):
            raise
        raise RequestError(f"malformed JSON body: {err}", status=400) from None


# ---------------------------------------------------------------------------------------------------- validation


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


def _schema_error(err: ValidationError, body: dict[str, Any], limits: Limits, allowed: list[str]) -> RequestError:
    """The first problem pydantic found, said the way a client can act on."""
    problem = err.errors(include_url=False)[0]
    if not problem["loc"] or problem["loc"][0] not in _FIELDS:
        return RequestError(f"the request body is invalid: {problem['msg']}")
    name = str(problem["loc"][0])
    value = body.get(name)
    ranges = {"cfg": limits.cfg_range, "tau": limits.tau_range, "top_p": (0.0, 1.0), "top_k": (0, 1_000_000),
              "seed": (0, MAX_SEED), "count": (1, limits.max_count)}  # fmt: skip
    if name == "prompt" and problem["type"] == "missing":
        return RequestError("'prompt' is required: a string, or a list of strings")
    if name in ("prompt", "negative_prompt"):
        shown = type(value).__name__ if not isinstance(value, list) else "a list holding a non-string"
        return RequestError(f"'{name}' must be a string{', or a list of strings' if name == 'prompt' else ''}, got {shown}")
    if name == "resolution":
        return RequestError(f"'resolution' must be one of {allowed}, got {value!r}")
    if name == "response_format":
        return RequestError(f"'response_format' must be 'json' or 'png', got {value!r}")
    if name == "aspect_ratio":
        return RequestError(f"'aspect_ratio' must be 'W:H' (such as '16:9') or a number, got {value!r}")
    lo, hi = ranges[name]
    if problem["type"] in ("greater_than_equal", "less_than_equal"):
        return RequestError(f"'{name}' must be in [{lo:g}, {hi:g}], got {value:g}")
    kind = "an integer" if name in ("top_k", "seed", "count") else "a number"
    return RequestError(f"'{name}' must be {kind} in [{lo:g}, {hi:g}], got {value!r}")


def _text(value: str, name: str, limits: Limits) -> str:
    if not value.strip():
        raise RequestError(f"'{name}' is empty; describe the image to generate")
    if len(value) > limits.max_prompt_chars:
        raise RequestError(f"'{name}' has {len(value)} characters; the limit is {limits.max_prompt_chars}", status=413)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:  # JSON "\ud800" escapes decode to lone surrogates: no text encoder takes them
        bad = value[err.start]
        raise RequestError(
            f"'{name}' contains the lone surrogate \\u{ord(bad):04x} at character {err.start}, which is not text; "
            "send the character itself or a valid surrogate pair"
        ) from None
    return value


def _in_range(value: float, name: str, lo: float, hi: float) -> float:
    if not lo <= value <= hi:
        raise RequestError(f"'{name}' must be in [{lo:g}, {hi:g}], got {value:g}")
    return float(value)


def parse_image_request(
    body: Any, limits: Limits, defaults: dict[str, Any], *, resolutions: Sequence[str] | None = None
) -> ImageRequest:
    """Validate a decoded JSON body; ``defaults`` fills fields the client left out (cfg, tau, resolution, ...).

    ``resolutions``: those the model can serve (default: the limits'); "native" needs ``defaults["native_size"]``.
    """
    if not isinstance(body, dict):
        raise RequestError('the request body must be a JSON object such as {"prompt": "a red circle"}', status=400)
    unknown = sorted(set(body) - set(_FIELDS))  # also catches names pydantic cannot read (lone surrogates)
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; valid fields: {_FIELDS}")
    allowed = list(resolutions if resolutions is not None else limits.resolutions)
    try:
        fields = ImageRequestBody.model_validate(body)
    except ValidationError as err:
        raise _schema_error(err, body, limits, allowed) from None

    if isinstance(fields.prompt, list):
        if not fields.prompt:
            raise RequestError("'prompt' is an empty list; give at least one prompt")
        if len(fields.prompt) > limits.max_prompts:
            raise RequestError(f"{len(fields.prompt)} prompts; the limit per request is {limits.max_prompts}", status=413)
        prompts = tuple(_text(p, "prompt", limits) for p in fields.prompt)
    else:
        prompts = (_text(fields.prompt, "prompt", limits),)
    negative = None if fields.negative_prompt is None else _text(fields.negative_prompt, "negative_prompt", limits)

    resolution = fields.resolution if fields.resolution is not None else defaults.get("resolution", allowed[0] if allowed else None)
    if resolution not in allowed:
        raise RequestError(f"'resolution' must be one of {allowed}, got {resolution!r}")
    image_size = None
    if resolution == NATIVE:
        height, width = (int(v) for v in defaults["native_size"])
        image_size = (height, width)
        divisor = math.gcd(height, width)
        native_aspect = f"{width // divisor}:{height // divisor}"

    aspect = fields.aspect_ratio
    if aspect is None:
        aspect = native_aspect if image_size else defaults.get("aspect_ratio", "1:1")
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

    def stored(name: str, fallback: float) -> float | tuple[float, ...]:
        value = defaults.get(name, fallback)  # the model's per-scale values are used as they are
        return tuple(float(v) for v in value) if isinstance(value, list | tuple) else float(value)

    cfg = stored("cfg", 3.0) if fields.cfg is None else _in_range(fields.cfg, "cfg", *limits.cfg_range)
    tau = stored("tau", 1.0) if fields.tau is None else _in_range(fields.tau, "tau", *limits.tau_range)
    top_k = int(defaults.get("top_k", 900)) if fields.top_k is None else fields.top_k
    top_p = float(defaults.get("top_p", 0.97)) if fields.top_p is None else float(fields.top_p)
    seed = 0 if fields.seed is None else fields.seed
    count = 1 if fields.count is None else fields.count
    if count > limits.max_count:
        raise RequestError(f"'count' must be in [1, {limits.max_count}], got {count}")
    if len(prompts) * count > limits.max_images_per_request:
        raise RequestError(
            f"{len(prompts)} prompt(s) x count {count} = {len(prompts) * count} images; the limit per request is "
            f"{limits.max_images_per_request}",
            status=413,
        )
    if fields.response_format == "png" and len(prompts) * count != 1:
        raise RequestError("'response_format': 'png' returns exactly one image; use 'json' for several")
    return ImageRequest(
        prompts=prompts, negative_prompt=negative, aspect_ratio=aspect, h_div_w=h_div_w, resolution=resolution,
        image_size=image_size, cfg=cfg, tau=tau, top_k=top_k, top_p=top_p, seed=seed, count=count,
        response_format=fields.response_format,
    )  # fmt: skip
