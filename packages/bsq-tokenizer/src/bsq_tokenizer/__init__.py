"""bsq_tokenizer: Infinity's bitwise multi-scale image tokenizer (BSQ-VAE), weight-compatible with the official files.

Shape letters used throughout: B batch, d bits per token, (H, W) sizes, (h, w) one scale's token grid, K scales,
L tokens over all scales.
"""

from .config import PRESETS, TokenizerConfig, config_from_official
from .loading import load_tokenizer
from .model import BSQTokenizer, EncodedImages
from .official import CheckpointMismatchError

__all__ = [
    "PRESETS",
    "BSQTokenizer",
    "CheckpointMismatchError",
    "EncodedImages",
    "TokenizerConfig",
    "config_from_official",
    "load_tokenizer",
]
__version__ = "0.1.0"
