"""The ``POST /v1/images`` request and response: pydantic models (served as OpenAPI at ``/docs``), a JSON reader with
limits, and validation with messages that say how to fix the input.

Validation has two layers: :class:`ImageRequestBody` holds what is fixed (field names and types, seed / top_k / top_p
ranges, the response formats); :func:`parse_image_request` adds what the service's configuration decides (prompt
length and count, cfg / tau ranges, resolutions, the model's native size) and fills defaults from the model.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bitwise_ar.editing import read_mask
from bsq_tokenizer.schedules import TEMPLATES, parse_aspect_ratio
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import NATIVE, Limits

__all__ = [
    "EditRequest",
    "EditRequestBody",
    "ErrorResponse",
    "ImageRequest",
    "ImageRequestBody",
    "ImageResult",
    "ImagesResponse",
    "RequestError",
    "decode_upload",
    "parse_edit_request",
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


# ---------------------------------------------------------------------------------------------------- edits

EDIT_FORMATS = ("PNG", "JPEG")


class EditRequestBody(BaseModel):
    """The JSON body of ``POST /v1/edits`` and ``POST /v1/edits/stream``: an image, an optional mask and a prompt.
    Images are base64 PNG or JPEG (``limits.max_edit_pixels``, ``limits.max_edit_body_bytes``); the mask is white
    (255) where the image is redrawn and black (0) where it is kept, at the image's size (the canvas's for
    out-painting)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(description="what the edited image shows")
    image_png_base64: str = Field(description="the image to edit: base64 of a PNG or JPEG file")
    mask_png_base64: str | None = Field(None, description="base64 PNG mask (white = redraw); required to in-paint")
    mode: Literal["inpaint", "outpaint", "variation"] = Field("inpaint")
    canvas_size: list[int] | None = Field(None, description="out-painting: the canvas [height, width] in pixels")
    offset: list[int] | None = Field(None, description="out-painting: [top, left] of the image on the canvas")
    keep_scales: int | None = Field(None, ge=0, le=64, description="variation: coarse scales kept")
    negative_prompt: str | None = None
    cfg: float | None = Field(None, **_FINITE)
    tau: float | None = Field(None, **_FINITE)
    top_k: int | None = Field(None, ge=0, le=1_000_000)
    top_p: float | None = Field(None, ge=0.0, le=1.0, **_FINITE)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    response_format: Literal["json", "png"] = "json"


_EDIT_FIELDS = sorted(EditRequestBody.model_fields)


@dataclass(frozen=True, kw_only=True)
class EditRequest:
    """A validated edit: one image out. ``image`` is RGB (PIL), ``mask`` grey-scale {0, 255} (PIL) or None."""

    prompt: str
    negative_prompt: str | None
    image: Any
    mask: Any
    mode: str
    canvas_size: tuple[int, int] | None
    offset: tuple[int, int] | None
    keep_scales: int | None
    cfg: float | tuple[float, ...]
    tau: float | tuple[float, ...]
    top_k: int
    top_p: float
    seed: int
    response_format: str

    num_images = 1
    count = 1

    @property
    def prompts(self) -> tuple[str, ...]:
        return (self.prompt,)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the output: the canvas for out-painting, else the image."""
        return self.canvas_size if self.canvas_size is not None else (self.image.height, self.image.width)

    @property
    def resolution(self) -> str:
        """The output size as "WxH" (an edit keeps its image's size)."""
        return f"{self.image_size[1]}x{self.image_size[0]}"

    @property
    def aspect_ratio(self) -> str:
        height, width = self.image_size
        divisor = math.gcd(height, width)
        return f"{width // divisor}:{height // divisor}"

    def items(self) -> list[tuple[int, str, int]]:
        return [(0, self.prompt, self.seed)]


def decode_upload(text: str, name: str, max_pixels: int) -> Any:
    """A base64 PNG/JPEG field as a loaded PIL image, refusing what is not one (422) and anything over
    ``max_pixels`` (413) from its header, before the pixels are decompressed."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"'{name}' is not valid base64 (send the PNG file's bytes base64-encoded)") from None
    if not data:
        raise RequestError(f"'{name}' is empty; send a PNG or JPEG file")
    try:
        with warnings.catch_warnings():  # the header's size is checked against the limit right below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=EDIT_FORMATS)
    except (UnidentifiedImageError, OSError, ValueError):
        raise RequestError(f"'{name}' is not a PNG or JPEG image") from None
    except Image.DecompressionBombError:
        raise RequestError(f"'{name}' declares more pixels than an image may have; the limit is {max_pixels}",
                           status=413) from None
    width, height = image.size
    if width < 1 or height < 1:
        raise RequestError(f"'{name}' is empty ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise RequestError(
            f"'{name}' is {width}x{height} = {width * height} pixels; the limit is {max_pixels}", status=413
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestError(f"'{name}' is too large to decode (limit {max_pixels} pixels)", status=413) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise RequestError(f"'{name}' could not be decoded: {err}") from None
    return image


def _pair(value: list[int] | None, name: str, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if len(value) != 2 or min(value) < 0:
        raise RequestError(f"'{name}' must be [{what}] (two integers >= 0), got {value}")
    return int(value[0]), int(value[1])


def parse_edit_request(body: Any, limits: Limits, defaults: dict[str, Any]) -> EditRequest:
    """Validate a decoded ``/v1/edits`` JSON body: fields, sizes (``limits.max_edit_pixels``), the images themselves,
    the mask against the image, and the mode's options. Sampling defaults come from ``defaults`` as for images."""
    if not isinstance(body, dict):
        raise RequestError('the request body must be a JSON object such as {"prompt": ..., "image_png_base64": ...}',
                           status=400)  # fmt: skip
    unknown = sorted(set(body) - set(_EDIT_FIELDS))
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; valid fields: {_EDIT_FIELDS}")
    try:
        fields = EditRequestBody.model_validate(body)
    except ValidationError as err:
        problem = err.errors(include_url=False)[0]
        where = f"'{problem['loc'][0]}'" if problem["loc"] else "the request body"
        raise RequestError(f"{where}: {problem['msg'].lower()}") from None
    prompt = _text(fields.prompt, "prompt", limits)
    negative = None if fields.negative_prompt is None else _text(fields.negative_prompt, "negative_prompt", limits)
    image = decode_upload(fields.image_png_base64, "image_png_base64", limits.max_edit_pixels).convert("RGB")
    canvas = _pair(fields.canvas_size, "canvas_size", "height, width")
    offset = _pair(fields.offset, "offset", "top, left")
    if fields.mode == "outpaint":
        if canvas is None:
            raise RequestError("'canvas_size' [height, width] is required to out-paint")
        if canvas[0] * canvas[1] > limits.max_edit_pixels:
            raise RequestError(f"'canvas_size' {canvas} is over the limit of {limits.max_edit_pixels} pixels",
                               status=413)  # fmt: skip
        if canvas[0] < image.height or canvas[1] < image.width:
            raise RequestError(f"'canvas_size' {list(canvas)} is smaller than the image "
                               f"[{image.height}, {image.width}]")  # fmt: skip
    elif canvas is not None or offset is not None:
        raise RequestError("'canvas_size' and 'offset' are for mode 'outpaint'")
    if fields.keep_scales is not None and fields.mode != "variation":
        raise RequestError("'keep_scales' is for mode 'variation'")
    mask = None
    if fields.mask_png_base64 is not None:
        if fields.mode == "variation":
            raise RequestError("mode 'variation' takes no mask; use mode 'inpaint' to redraw a region")
        mask = decode_upload(fields.mask_png_base64, "mask_png_base64", limits.max_edit_pixels).convert("L")
        want = canvas or (image.height, image.width)
        if (mask.height, mask.width) != tuple(want):
            raise RequestError(f"the mask is {mask.width}x{mask.height} but the {'canvas' if canvas else 'image'} "
                               f"is {want[1]}x{want[0]} (WxH); draw the mask at the image's size")  # fmt: skip
        try:
            read_mask(mask, want)
        except ValueError as err:
            raise RequestError(f"'mask_png_base64': {err}") from None
    elif fields.mode == "inpaint":
        raise RequestError("'mask_png_base64' is required to in-paint (white = redraw, black = keep)")

    def stored(name: str, fallback: float) -> float | tuple[float, ...]:
        value = defaults.get(name, fallback)
        return tuple(float(v) for v in value) if isinstance(value, list | tuple) else float(value)

    return EditRequest(
        prompt=prompt, negative_prompt=negative, image=image, mask=mask, mode=fields.mode, canvas_size=canvas,
        offset=offset, keep_scales=fields.keep_scales,
        cfg=stored("cfg", 3.0) if fields.cfg is None else _in_range(fields.cfg, "cfg", *limits.cfg_range),
        tau=stored("tau", 1.0) if fields.tau is None else _in_range(fields.tau, "tau", *limits.tau_range),
        top_k=int(defaults.get("top_k", 900)) if fields.top_k is None else fields.top_k,
        top_p=float(defaults.get("top_p", 0.97)) if fields.top_p is None else float(fields.top_p),
        seed=0 if fields.seed is None else fields.seed, response_format=fields.response_format,
    )  # fmt: skip
