"""``POST /v1/edits`` against a real server on loopback: an edit equals ``InfinityPipeline.edit`` called directly,
previews stream per scale, and hostile uploads (bombs, wrong sizes, masks that do not match, non-images) are 4xx
with a message that names the problem, while the service keeps serving."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from typing import Any

import httpx
import numpy as np
import pytest
from bitwise_ar.sampling import SamplingConfig
from PIL import Image

SIZE = 64


def _png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _source() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def _mask(size: tuple[int, int] = (SIZE, SIZE), value: int = 255) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    mask[16:48, 8:40] = value
    return mask


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def _bomb_header(width: int, height: int) -> str:
    """A PNG whose header declares width x height pixels around a 1x1 image's data (what a decompression bomb's
    header looks like; the service must refuse it from the header alone)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return base64.b64encode(bytes(data)).decode("ascii")


def _post(url: str, body: dict[str, Any] | bytes, path: str = "/v1/edits") -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + path, content=content, headers={"content-type": "application/json"}, timeout=300)


def test_edit_equals_the_pipeline_and_streams_previews(service_url: str, engine: Any) -> None:
    body = {"prompt": "a blue square", "image_png_base64": _png(_source()), "mask_png_base64": _png(_mask()),
            "seed": 3}  # fmt: skip
    response = _post(service_url, body)
    assert response.status_code == 200, response.text
    result = response.json()["images"][0]
    assert (result["width"], result["height"]) == (SIZE, SIZE)
    direct = engine.pipeline.edit(Image.fromarray(_source()), "a blue square", mask=_mask(), seed=3,
                                  sampling=SamplingConfig(cfg=3.0, tau=1.0))  # the tiny model's stored defaults
    assert np.array_equal(_decode(result["png_base64"]), np.asarray(direct.images[0]))

    events = []
    with httpx.stream("POST", service_url + "/v1/edits/stream", json=body, timeout=300) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
    schedule = engine.pipeline.layout_for(image_size=(SIZE, SIZE)).schedule
    assert events == ["queued", "started", *["preview"] * len(schedule), "image", "done"]

    wide = _post(service_url, {"prompt": "a red circle", "image_png_base64": _png(_source()), "mode": "outpaint",
                               "canvas_size": [64, 128], "response_format": "png"})  # fmt: skip
    assert wide.status_code == 200 and wide.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(wide.content)).size == (128, 64)


HOSTILE = {
    "not base64": ({"image_png_base64": "not base64!"}, 422, "not valid base64"),
    "not an image": ({"image_png_base64": base64.b64encode(b"hello, world").decode()}, 422, "not a PNG or JPEG"),
    "a GIF": ({"image_png_base64": "R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"}, 422,
              "not a PNG or JPEG"),
    "bomb header": ({"image_png_base64": _bomb_header(100_000, 100_000)}, 413, "the limit is 262144"),
    "large header": ({"image_png_base64": _bomb_header(10_000, 10_000)}, 413, "pixels; the limit is 262144"),
    "truncated": ({"image_png_base64": _png(_source())[:200]}, 422, "could not be decoded"),
    "too large": ({"image_png_base64": _png(np.zeros((600, 600, 3), np.uint8))}, 413, "the limit is 262144"),
    "mask size": ({"mask_png_base64": _png(_mask((32, 32)))}, 422, "the mask is 32x32 but the image is 64x64"),
    "soft mask": ({"mask_png_base64": _png(_mask(value=128))}, 422, "must be binary"),
    "no mask": ({"mask_png_base64": None}, 422, "required to in-paint"),
    "off the grid": ({"image_png_base64": _png(np.zeros((60, 64, 3), np.uint8)),
                      "mask_png_base64": _png(_mask((60, 64)))}, 422, "multiple of the token stride"),
    "canvas too small": ({"mode": "outpaint", "canvas_size": [32, 32], "mask_png_base64": None}, 422,
                         "smaller than the image"),
    "variation mask": ({"mode": "variation"}, 422, "takes no mask"),
    "unknown field": ({"strength": 0.5}, 422, "unknown field"),
    "empty prompt": ({"prompt": "  "}, 422, "'prompt' is empty"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_uploads_are_4xx_with_a_clear_message(service_url: str, case: str) -> None:
    change, status, message = HOSTILE[case]
    body = {"prompt": "a red circle", "image_png_base64": _png(_source()), "mask_png_base64": _png(_mask()),
            **change}  # fmt: skip
    body = {k: v for k, v in body.items() if v is not None}
    response = _post(service_url, body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


def test_body_over_the_edit_limit_is_413_and_the_service_still_edits(service_url: str, engine: Any) -> None:
    limit = engine.config.limits.max_edit_body_bytes
    response = _post(service_url, b"{" + b" " * limit + b"}")
    assert response.status_code == 413 and "limit" in response.json()["error"]["message"]
    ok = _post(service_url, {"prompt": "a red circle", "image_png_base64": _png(_source()), "mode": "variation"})
    assert ok.status_code == 200, ok.text
