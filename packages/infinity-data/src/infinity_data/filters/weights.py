"""Loading local weight files: never downloads, and a missing file says where to get it."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["load_state_dict_file", "require_file", "require_torch"]


def require_torch(what: str) -> ModuleType:
    """The ``torch`` module, or an ImportError naming the ``models`` extra (the core install has no torch)."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(f"the {what} needs torch: pip install 'infinity-data[models]'") from err
    return torch


def require_file(path: str | Path, *, what: str, how_to_get: str, setting: str) -> Path:
    """Return ``path`` if it is a file, else raise FileNotFoundError naming it, the setting and how to obtain it."""
    if not str(path):
        raise FileNotFoundError(f"{what}: no weights file configured; set {setting}=<path>. {how_to_get}")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise FileNotFoundError(
            f"{what}: weights file {str(resolved)!r} (from {setting}) does not exist. {how_to_get} "
            "Nothing is downloaded automatically."
        )
    return resolved


def load_state_dict_file(path: str | Path) -> dict[str, Any]:
    """Load a state dict from ``.safetensors`` or a torch file (``weights_only=True``).

    Torch files may hold the state dict directly or under ``"weights"`` / ``"state_dict"`` (the LAION watermark
    scripts disagree on which), and keys may carry a ``module.`` prefix from DataParallel.
    """
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("weights", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict (got {type(state).__name__})")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state
