"""Loading official Infinity checkpoints and our own ``save_pretrained`` format: the module-level API.

The state-dict work (reading the official files, key conversion, config inference, strict checks) and the description
of both formats are in :mod:`bitwise_ar.model.state_dict`, which the model class itself uses; this module puts the
class and it together.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from bitwise_ar.config import InfinityConfig
from bitwise_ar.model.state_dict import (
    CONFIG_FILE,
    FORMAT,
    WEIGHTS_FILE,
    CheckpointMismatchError,
    check_state_dict,
    convert_official_state_dict,
    infer_config,
    read_config,
    read_official_checkpoint,
    save_pretrained,
    to_official_state_dict,
)
from bitwise_ar.model.transformer import InfinityTransformer

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "WEIGHTS_FILE",
    "CheckpointMismatchError",
    "check_state_dict",
    "convert_official",
    "convert_official_state_dict",
    "from_pretrained",
    "infer_config",
    "load_official",
    "read_config",
    "read_official_checkpoint",
    "save_pretrained",
    "to_official_state_dict",
]

logger = logging.getLogger(__name__)


def load_official(
    path_or_state: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    config: InfinityConfig | str | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> InfinityTransformer:
    """:meth:`InfinityTransformer.from_official`: an official checkpoint (file or state dict), loaded strictly."""
    return InfinityTransformer.from_official(path_or_state, config, device=device, dtype=dtype)


def from_pretrained(
    path: str | os.PathLike[str], *, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> InfinityTransformer:
    """:meth:`InfinityTransformer.from_pretrained`: a directory written by :func:`save_pretrained`, strictly."""
    return InfinityTransformer.from_pretrained(path, device=device, dtype=dtype)


def convert_official(
    source: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    config: InfinityConfig | str | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Convert an official checkpoint to our format: load strictly, then :func:`save_pretrained` (``dtype``: cast the
    floating-point tensors first; default: keep the checkpoint's)."""
    model = load_official(source, config, dtype=dtype)
    logger.info("loaded %s (%d parameters)", source, model.num_parameters())
    return save_pretrained(model, output_dir)
