"""Image input/output helpers: tensors, NumPy arrays and PIL images in; padding to the stride and cropping back.

Conventions: model tensors are RGB ``(B, 3, H, W)`` float in [-1, 1]. Inputs may be

* ``torch.Tensor`` ``(3, H, W)`` or ``(B, 3, H, W)``: uint8 means 0..255, floats mean [-1, 1] unless ``value_range``;
* ``numpy.ndarray`` ``(H, W, 3)`` or ``(B, H, W, 3)`` (image-library layout): uint8 means 0..255, floats mean [0, 1]
  unless ``value_range``;
* ``PIL.Image.Image`` (converted to RGB);
* a list/tuple of the above, all of one size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ImageInput", "crop", "load_image", "pad_to_multiple", "save_image", "to_image_batch", "to_uint8"]

ImageInput = Any  # torch.Tensor | np.ndarray | PIL.Image.Image | Sequence of those


def _scale(x: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    lo, hi = (float(v) for v in value_range)
    if hi <= lo:
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
    return (x - lo) * (2.0 / (hi - lo)) - 1.0


def _from_tensor(x: torch.Tensor, value_range: tuple[float, float] | None, channels: int) -> torch.Tensor:
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(
            f"image tensors must be ({channels}, H, W) or (B, {channels}, H, W) with {channels} channels, got shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"image tensor has {x.shape[1]} channels (shape {tuple(x.shape)}); expected {channels} "
            "(RGB, channels first: (B, 3, H, W))"
        )
    if x.dtype == torch.uint8:
        return _scale(x.to(torch.float32), value_range or (0.0, 255.0))
    if not x.is_floating_point():
        raise ValueError(f"image tensors must be uint8 or floating point, got {x.dtype}")
    return x if value_range is None else _scale(x, value_range)


def _from_numpy(a: np.ndarray, value_range: tuple[float, float] | None, channels: int) -> torch.Tensor:
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(
            f"image arrays must be (H, W, {channels}) or (B, H, W, {channels}) with {channels} channels, got shape {a.shape}"
        )
    if a.shape[-1] != channels:
        raise ValueError(
            f"image array has {a.shape[-1]} channels (shape {a.shape}); expected {channels} (RGB, channels last)"
        )
    if a.dtype == np.uint8:
        lo_hi = value_range or (0.0, 255.0)
    elif np.issubdtype(a.dtype, np.floating):
        lo_hi = value_range or (0.0, 1.0)
    else:
        raise ValueError(f"image arrays must be uint8 or floating point, got {a.dtype}")
    t = torch.from_numpy(np.array(a, dtype=np.float32)).permute(0, 3, 1, 2)
    return _scale(t, lo_hi)


def _is_pil(obj: object) -> bool:
    return type(obj).__module__.startswith("PIL.") and hasattr(obj, "convert") and hasattr(obj, "size")


def to_image_batch(
    images: ImageInput, *, value_range: tuple[float, float] | None = None, channels: int = 3
) -> torch.Tensor:
    """Convert any supported image input to a float32 ``(B, 3, H, W)`` tensor in [-1, 1] (see module doc)."""
    if isinstance(images, torch.Tensor):
        return _from_tensor(images, value_range, channels)
    if isinstance(images, np.ndarray):
        return _from_numpy(images, value_range, channels)
    if _is_pil(images):
        rgb = np.asarray(images.convert("RGB"))
        return _from_numpy(rgb, None, channels)
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        if not images:
            raise ValueError("got an empty list of images")
        parts = [to_image_batch(im, value_range=value_range, channels=channels) for im in images]
        sizes = {tuple(p.shape[-2:]) for p in parts}
        if len(sizes) > 1:
            raise ValueError(f"images in one batch must share a size, got {sorted(sizes)}; encode them separately")
        return torch.cat([p.to(torch.float32) for p in parts], dim=0)
    if isinstance(images, (str, os.PathLike)):
        raise ValueError(f"got a path {images!r}; load it first with bsq_tokenizer.images.load_image(path)")
    raise ValueError(
        f"unsupported image input of type {type(images).__name__}; pass a tensor, NumPy array or PIL image"
    )


def pad_to_multiple(x_BCHW: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad right and bottom so H and W are multiples of ``multiple`` (crop back with :func:`crop`)."""
    h, w = x_BCHW.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return x_BCHW
    return F.pad(x_BCHW, (0, pw, 0, ph), mode="replicate")


def crop(x_BCHW: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Top-left crop to ``size = (H, W)`` (undoes :func:`pad_to_multiple`)."""
    h, w = (int(s) for s in size)
    return x_BCHW[..., :h, :w]


def to_uint8(images_B3HW: torch.Tensor) -> np.ndarray:
    """[-1, 1] float ``(B, 3, H, W)`` -> uint8 ``(B, H, W, 3)`` (rounded to nearest)."""
    x = ((images_B3HW.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images_B3HW: torch.Tensor, columns: int = 8) -> np.ndarray:
    """A (rows*H, columns*W, 3) uint8 grid of images in [-1, 1] (for logging reconstructions and samples)."""
    x = to_uint8(images_B3HW.detach().float().clamp(-1, 1).cpu())
    b, h, w = x.shape[0], x.shape[1], x.shape[2]
    columns = max(1, min(columns, b))
    rows = (b + columns - 1) // columns
    grid = np.full((rows * h, columns * w, 3), 255, dtype=np.uint8)
    for i in range(b):
        r, c = divmod(i, columns)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = x[i]
    return grid


def load_image(path: str | os.PathLike[str]):  # -> PIL.Image.Image
    """Open an image file as RGB; raises ``FileNotFoundError``/``ValueError`` with the file name on failure."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} not found")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except Image.DecompressionBombError as err:
        # Pillow refuses images over 2 * Image.MAX_IMAGE_PIXELS: a decompression bomb, or a huge but real image
        raise ValueError(
            f"cannot read image file {path}: {err} (raise PIL.Image.MAX_IMAGE_PIXELS if the image is trusted)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image file {path}: {err}") from None


def save_image(image_3HW_or_HW3: torch.Tensor | np.ndarray, path: str | os.PathLike[str]) -> None:
    """Save one image (a [-1, 1] ``(3, H, W)`` tensor or a uint8 ``(H, W, 3)`` array) to ``path``."""
    from PIL import Image

    if isinstance(image_3HW_or_HW3, torch.Tensor):
        array = to_uint8(image_3HW_or_HW3.unsqueeze(0))[0]
    else:
        array = np.asarray(image_3HW_or_HW3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
