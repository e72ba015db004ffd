"""Reading image files and checking image sets, with errors that say what to fix."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def list_images(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (sorted by path). Raises if the folder is missing or holds no image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}")
    return files


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB (EXIF orientation applied). Unreadable files raise ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}. Re-generate or delete it.") from exc


def load_rgb_array(path: str | Path) -> np.ndarray:
    """Image as a uint8 ``(H, W, 3)`` array."""
    return np.asarray(load_image(path), dtype=np.uint8)


def check_image_sizes(paths: Iterable[str | Path], *, expected: tuple[int, int] | None = None,
                      min_side: int = 1) -> tuple[int, int] | None:
    """Check every image opens and, if ``expected`` (width, height) is given, has that size.

    Returns the common size when all images share one, else ``None``. Raises ``ValueError`` listing the offenders.
    """
    sizes: dict[tuple[int, int], list[Path]] = {}
    for path in paths:
        path = Path(path)
        try:
            with Image.open(path) as img:
                size = img.size
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"cannot read image {path}: {exc}") from exc
        if min(size) < min_side:
            raise ValueError(f"image {path} is {size[0]}x{size[1]}, smaller than the minimum side {min_side}")
        sizes.setdefault(size, []).append(path)
    if expected is not None:
        wrong = {s: ps for s, ps in sizes.items() if s != tuple(expected)}
        if wrong:
            size, ps = next(iter(wrong.items()))
            raise ValueError(
                f"{sum(len(v) for v in wrong.values())} image(s) are not {expected[0]}x{expected[1]}, "
                f"e.g. {ps[0]} is {size[0]}x{size[1]}"
            )
    return next(iter(sizes)) if len(sizes) == 1 else None


def check_count(found: Sequence[object], expected: int, what: str, *, allow_incomplete: bool = False) -> None:
    """Raise unless ``len(found) == expected`` (fewer is tolerated, with a warning, when ``allow_incomplete``)."""
    n = len(found)
    if n == expected:
        return
    if n < expected and allow_incomplete:
        logger.warning("%s: %d of %d present; scoring an incomplete set (--allow-incomplete)", what, n, expected)
        return
    raise ValueError(
        f"{what}: expected {expected}, found {n}. "
        + ("Finish generation or pass --allow-incomplete." if n < expected else "Remove the extra files.")
    )
