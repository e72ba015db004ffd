"""Captioned image grids for docs and reports."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw


def captioned_grid(images: Sequence[Image.Image], captions: Sequence[str], *, columns: int = 4, scale: int = 3, marks: Sequence[bool] | None = None) -> Image.Image:
    """Images upscaled ``scale``x (nearest) in a grid, each with its caption underneath (wrapped); ``marks`` adds a
    green (True) or red (False) bar under each image, e.g. ShapesEval verdicts."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    w, h = images[0].width * scale, images[0].height * scale
    text_h = 34
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * (w + 8) + 8, rows * (h + text_h + 12) + 8), (255, 255, 255))
    pen = ImageDraw.Draw(grid)
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        r, c = divmod(i, columns)
        x, y = 8 + c * (w + 8), 8 + r * (h + text_h + 12)
        grid.paste(image.resize((w, h), Image.Resampling.NEAREST), (x, y))
        if marks is not None:
            pen.rectangle((x, y + h, x + w, y + h + 3), fill=(40, 170, 60) if marks[i] else (220, 40, 40))
        words, lines, line = caption.split(), [], ""
        for word in words:
            if len(line) + len(word) + 1 > w // 6:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        for k, text in enumerate(lines[:3]):
            pen.text((x, y + h + 5 + 10 * k), text, fill=(30, 30, 30))
    return grid
