"""bsq_tokenizer: Infinity's bitwise multi-scale image tokenizer (BSQ-VAE), weight-compatible with the official files.

Shape letters used throughout: B batch, d bits per token, (H, W) sizes, (h, w) one scale's token grid, K scales,
L tokens over all scales.

The torch-backed exports (:class:`BSQTokenizer`, :class:`EncodedImages`, :func:`load_tokenizer`,
:class:`CheckpointMismatchError`) are loaded on first access (PEP 562), so pure-Python parts such as
``bsq_tokenizer.schedules`` and ``bsq_tokenizer.config`` can be imported without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import PRESETS, TokenizerConfig, config_from_official

if TYPE_CHECKING:  # static tools see the real symbols; at run time they load on first access
    from .bitfile import EncodedImages
    from .loading import load_tokenizer
    from .model import BSQTokenizer, WeightsMismatchError
    from .model_io import CheckpointMismatchError

# public name -> submodule that defines it (imported on first attribute access)
_LAZY = {
    "BSQTokenizer": "model",
    "EncodedImages": "bitfile",
    "WeightsMismatchError": "model",
    "CheckpointMismatchError": "model_io",
    "load_tokenizer": "loading",
}

__all__ = [
    "PRESETS",
    "BSQTokenizer",
    "CheckpointMismatchError",
    "EncodedImages",
    "TokenizerConfig",
    "WeightsMismatchError",
    "config_from_official",
    "load_tokenizer",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        # AttributeError (not ImportError) lets `from bsq_tokenizer import schedules` fall through to the submodule
        raise AttributeError(f"module 'bsq_tokenizer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
