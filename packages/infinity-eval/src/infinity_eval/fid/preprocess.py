"""Resize + normalisation conventions in front of the FID Inception network.

Three modes, named in every FID metric key because they give systematically different numbers:

- ``clean`` (default; clean-fid ``mode="clean"``): PIL bicubic resize of each channel in float mode ('F') to
  299×299, clipped to [0, 255] and *not* re-quantised; then ``(x - 128) / 128``.
- ``legacy_pytorch`` (pytorch-fid): ``torch`` bilinear, ``align_corners=False``, no antialias, clipped; then
  ``2 * x / 255 - 1``.
- ``legacy_tensorflow`` (TTUR / torch-fidelity / NVlabs): TensorFlow-1 bilinear (source coordinate = ``dst * in/out``,
  no half-pixel centres, border clamp); then ``(x - 128) / 128``.

Input images are ``uint8`` RGB arrays ``(H, W, 3)``, read as clean-fid does (``PIL.Image.open(p).convert("RGB")``).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from infinity_eval.fid.inception import INPUT_SIZE

FIDMode = Literal["clean", "legacy_pytorch", "legacy_tensorflow"]
FID_MODES: tuple[str, ...] = get_args(FIDMode)


def check_mode(mode: str) -> None:
    """Raise ``ValueError`` unless ``mode`` is one of :data:`FID_MODES`."""
    if mode not in FID_MODES:
        raise ValueError(f"unknown FID mode {mode!r}; choose one of {', '.join(FID_MODES)}")


def resize_clean(image_HW3: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """clean-fid resize: per-channel PIL bicubic in float32 mode 'F', clipped to [0, 255], float32 ``(size, size, 3)``."""
    channels = []
    for c in range(image_HW3.shape[2]):
        # A float32 array becomes a mode 'F' image, so PIL filters in float without rounding.
        plane = Image.fromarray(np.ascontiguousarray(image_HW3[:, :, c], dtype=np.float32))
        channels.append(np.asarray(plane.resize((size, size), resample=Image.Resampling.BICUBIC), dtype=np.float32))
    return np.clip(np.stack(channels, axis=2), 0.0, 255.0)


def resize_torch_bilinear(image_HW3: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """pytorch-fid resize: ``F.interpolate(bilinear, align_corners=False)`` without antialias, clipped to [0, 255]."""
    x = torch.from_numpy(np.ascontiguousarray(image_HW3, dtype=np.float32)).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0).numpy().clip(0.0, 255.0)


def resize_tf1_bilinear(image_HW3: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """TensorFlow-1 ``resize_bilinear`` (``align_corners=False``, no half-pixel centres), float32 ``(size, size, 3)``."""
    x = np.asarray(image_HW3, dtype=np.float64)
    height, width = x.shape[:2]

    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.arange(size, dtype=np.float64) * (n_in / size)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, fy = axis(height)
    x0, x1, fx = axis(width)
    top = x[y0][:, x0] * (1 - fx)[None, :, None] + x[y0][:, x1] * fx[None, :, None]
    bottom = x[y1][:, x0] * (1 - fx)[None, :, None] + x[y1][:, x1] * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]
    return out.astype(np.float32)


def preprocess_for_fid(image_HW3: np.ndarray, mode: FIDMode = "clean") -> torch.Tensor:
    """Resize and normalise one uint8 RGB image for :class:`FIDInceptionV3`; returns float32 ``(3, 299, 299)``."""
    check_mode(mode)
    image = np.asarray(image_HW3)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
    if mode == "clean":
        resized = resize_clean(image)
        normalised = (resized - 128.0) / 128.0
    elif mode == "legacy_pytorch":
        resized = resize_torch_bilinear(image)
        normalised = 2.0 * (resized / 255.0) - 1.0
    else:
        resized = resize_tf1_bilinear(image)
        normalised = (resized - 128.0) / 128.0
    return torch.from_numpy(np.ascontiguousarray(normalised, dtype=np.float32)).permute(2, 0, 1).contiguous()
