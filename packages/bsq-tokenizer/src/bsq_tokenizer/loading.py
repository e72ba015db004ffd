"""Finding and loading tokenizer weights: our format directories, official ``.pth`` files, the packaged demo."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .model import CONFIG_FILE, BSQTokenizer

__all__ = ["DEMO_WEIGHTS_DIR", "demo_image_path", "load_tokenizer"]

DEMO_WEIGHTS_DIR = Path(__file__).resolve().parent / "demo_weights"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def demo_image_path() -> Path:
    """The example photo shipped next to the demo weights (``demo_weights/example.*``)."""
    for suffix in _IMAGE_SUFFIXES:
        path = DEMO_WEIGHTS_DIR / f"example{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no demo image (example.jpg/.png) in {DEMO_WEIGHTS_DIR}; pass an image path instead of --demo"
    )


def load_tokenizer(
    weights: str | os.PathLike[str] | None = None,
    *,
    preset: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> BSQTokenizer:
    """Load a tokenizer from ``weights``: a directory in our format (``config.json`` + ``model.safetensors``), or an
    official ``infinity_vae_*.pth`` file (architecture from ``preset`` or inferred from its shapes).

    With ``weights=None`` the packaged demo tokenizer (``bsq_tokenizer/demo_weights/``) is used if it exists.
    ``device`` / ``dtype``: as in :meth:`BSQTokenizer.from_pretrained` (default: CPU, dtype as stored).
    """
    if weights is None:
        if not (DEMO_WEIGHTS_DIR / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"no tokenizer weights given and no demo weights installed at {DEMO_WEIGHTS_DIR}; pass --weights DIR "
                "(a directory written by `bsq-tokenizer convert-official`) or --weights FILE.pth --preset NAME"
            )
        weights = DEMO_WEIGHTS_DIR
    path = Path(weights)
    if path.is_dir():
        if preset is not None:
            raise ValueError(
                f"--preset applies to official .pth files; {path} is a tokenizer directory with its own config"
            )
        return BSQTokenizer.from_pretrained(path, device=device, dtype=dtype)
    if path.is_file():
        return BSQTokenizer.from_official(path, preset, device=device, dtype=dtype)
    raise FileNotFoundError(f"tokenizer weights {path} not found (expected a directory or an official .pth file)")
