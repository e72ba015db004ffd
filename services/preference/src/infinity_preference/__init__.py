"""infinity_preference: a double-blind human preference study of text-to-image models (Infinity paper §4)."""

from .config import CRITERIA, PreferenceConfig, load_preference_config

__all__ = ["CRITERIA", "PreferenceConfig", "load_preference_config"]
