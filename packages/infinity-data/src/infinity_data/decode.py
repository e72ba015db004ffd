"""Guarded image decoding: header probes, truncation checks, bomb limits, EXIF rotation and mode normalisation.

Every failure becomes a :class:`DecodeError` with a short ``kind`` (``corrupt``, ``truncated``, ``decompression_bomb``,
``empty``, ``unsupported_mode``) that the reports count as ``error:<kind>``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DecodeConfig",
    "DecodeError",
    "ImageInfo",
    "decode_rgb",
    "normalized_bytes",
    "probe",
]

# PIL formats whose bytes the official loader (PIL open + convert("RGB")) reads as-is.
_PASSTHROUGH_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_PASSTHROUGH_MODES = {"RGB", "L"}
_ORIENTATION_TAG = 0x0112
_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


class DecodeError(Exception):
    """An image that cannot be used; ``kind`` is the error code counted in reports."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    """Decode guards. ``max_pixels`` rejects decompression bombs from the header, before any pixel is decoded."""

    max_pixels: int = 64_000_000
    max_bytes: int = 64 * 1024 * 1024
    check_truncation: bool = True
    reencode_jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_bytes < 1:
            raise ValueError("decode.max_pixels and decode.max_bytes must be positive")
        if not 1 <= self.reencode_jpeg_quality <= 100:
            raise ValueError(f"decode.reencode_jpeg_quality must be in [1, 100], got {self.reencode_jpeg_quality}")


@dataclass(frozen=True, kw_only=True)
class ImageInfo:
    """What the header says. ``width``/``height`` are *after* EXIF rotation (what a viewer shows)."""

    width: int
    height: int
    format: str
    mode: str
    orientation: int

    @property
    def h_div_w(self) -> float:
        return self.height / self.width

    @property
    def passthrough(self) -> bool:
        """True when the original bytes can be stored unchanged (common format, RGB/L, no rotation pending)."""
        return self.format in _PASSTHROUGH_FORMATS and self.mode in _PASSTHROUGH_MODES and self.orientation in (0, 1)


def _looks_truncated(data: bytes, fmt: str) -> bool:
    # Cheap end-of-stream checks so the header-only path still catches cut-off files.
    tail = data[-64:].rstrip(b"\x00\r\n ")
    if fmt == "JPEG":
        return not tail.endswith(b"\xff\xd9")
    if fmt == "PNG":
        return b"IEND" not in tail
    return False


def probe(data: bytes, config: DecodeConfig | None = None) -> ImageInfo:
    """Read size, format, mode and EXIF orientation from the header only (no pixel decoding).

    Raises :class:`DecodeError` for empty, unreadable, truncated (JPEG/PNG end markers) or oversized images.
    """
    config = config or DecodeConfig()
    if not data:
        raise DecodeError("empty", "image has zero bytes")
    if len(data) > config.max_bytes:
        raise DecodeError("decompression_bomb", f"image has {len(data)} bytes > decode.max_bytes={config.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            fmt = image.format or ""
            mode = image.mode
            orientation = 1
            if fmt in ("JPEG", "WEBP", "PNG", "TIFF", "MPO"):
                orientation = int(image.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError("decompression_bomb", str(exc)) from None
    except UnidentifiedImageError as exc:
        raise DecodeError("corrupt", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DecodeError("truncated" if "truncat" in str(exc).lower() else "corrupt", str(exc)) from None
    if width < 1 or height < 1:
        raise DecodeError("corrupt", f"image reports size {width}x{height}")
    if width * height > config.max_pixels:
        raise DecodeError(
            "decompression_bomb", f"{width}x{height} = {width * height} pixels > decode.max_pixels={config.max_pixels}"
        )
    if config.check_truncation and _looks_truncated(data, fmt):
        raise DecodeError("truncated", f"{fmt} stream has no end marker")
    if orientation in _TRANSPOSED:
        width, height = height, width
    return ImageInfo(width=width, height=height, format=fmt, mode=mode, orientation=orientation)


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit / 32-bit grey: rescale to 8 bits instead of clipping (PIL's convert clips values above 255).
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(array.max()), 1.0)
        if mode == "I" and array.max() <= 255:
            top = 255.0
        grey = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Composite transparency onto white, as a browser shows it on a white page.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_rgb(data: bytes, config: DecodeConfig | None = None, *, max_side: int | None = None) -> Image.Image:
    """Decode to an 8-bit RGB image with EXIF rotation applied.

    ``max_side`` lets JPEGs decode at a reduced DCT scale (``Image.draft``) when only a small copy is needed
    (hashes, OCR, model inputs); the result is then at least ``max_side`` on its long side or the full image.
    """
    config = config or DecodeConfig()
    info = probe(data, config)
    try:
        image = Image.open(io.BytesIO(data))
        if max_side is not None and image.format == "JPEG":
            scale = max(image.size) / max_side
            if scale >= 2:
                image.draft("RGB", (max(1, int(image.size[0] / scale)), max(1, int(image.size[1] / scale))))
        image.load()
    except Image.DecompressionBombError as exc:
        raise DecodeError("decompression_bomb", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DecodeError("truncated" if "truncat" in str(exc).lower() else "corrupt", str(exc)) from None
    if info.orientation not in (0, 1):
        image = ImageOps.exif_transpose(image)
    try:
        return _to_rgb(image)
    except (OSError, ValueError) as exc:
        raise DecodeError("unsupported_mode", f"cannot convert mode {image.mode!r} to RGB: {exc}") from None


def normalized_bytes(data: bytes, info: ImageInfo, config: DecodeConfig | None = None) -> tuple[bytes, str, bool]:
    """Bytes to store for a kept image: ``(bytes, extension, reencoded)``.

    Common RGB/grey JPEG/PNG/WebP files without pending EXIF rotation pass through untouched (no quality loss, no CPU);
    anything else (CMYK, alpha, 16-bit, palette, rotated, exotic formats) is decoded, normalised to RGB and re-encoded
    (PNG for lossless sources, JPEG otherwise) so that a plain ``PIL.Image.open(...).convert("RGB")`` -- what the official
    loader does -- sees the same pixels and size that the metadata describes.
    """
    config = config or DecodeConfig()
    if info.passthrough:
        return data, _PASSTHROUGH_FORMATS[info.format], False
    image = decode_rgb(data, config)
    buffer = io.BytesIO()
    if info.format in ("JPEG", "MPO", "WEBP") and info.mode not in ("RGBA", "LA", "PA", "P"):
        image.save(buffer, format="JPEG", quality=config.reencode_jpeg_quality)
        return buffer.getvalue(), "jpg", True
    image.save(buffer, format="PNG")
    return buffer.getvalue(), "png", True
