"""Training checkpoints: model + its config, optimiser, step, data position, RNG state; atomic writes.

A checkpoint is one ``step_XXXXXXX.pt`` file written to a temporary name and renamed into place, so a kill during
the write leaves the previous checkpoint intact; ``latest`` finds the newest complete one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

FORMAT = "bitwise-ar-train/1"
# Config entries that must match to resume: anything that changes shapes, data order or the objective, as
# (section, key, the value of a checkpoint written before the key existed).
_RESUME_KEYS = (
    ("model", "preset", None),
    ("model", "overrides", None),
    ("data", "batch_size", None),
    ("data", "seed", None),
    ("data", "source", None),
    ("data", "shapes_grid", 0),
    ("data", "shapes_ordered", False),
    ("data", "shapes_rows", False),
)


def save_checkpoint(directory: str | Path, step: int, payload: dict[str, Any], *, keep: int = 2) -> Path:
    """Atomically write ``payload`` (plus format/step) as ``directory/step_<step>.pt``; keep the newest ``keep``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:07d}.pt"
    tmp = directory / f".step_{step:07d}.pt.tmp"
    torch.save({"format": FORMAT, "step": step, **payload}, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    for old in sorted(directory.glob("step_*.pt"))[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(directory: str | Path) -> Path | None:
    """Newest complete checkpoint in ``directory`` (temporary files of an interrupted write are ignored)."""
    found = sorted(Path(directory).glob("step_*.pt")) if Path(directory).is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint (``weights_only=True``); FileNotFoundError / ValueError with the reason otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a bitwise-ar training checkpoint (format {FORMAT})")
    return state


def check_resumable(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Refuse to resume with a config that changes the model or the data order (lists what differs)."""
    diffs = []
    for section, key, default in _RESUME_KEYS:
        a, b = saved.get(section, {}).get(key, default), current.get(section, {}).get(key, default)
        if a != b:
            diffs.append(f"{section}.{key}: checkpoint {a!r} vs config {b!r}")
    if diffs:
        raise ValueError(
            f"cannot resume from {path} with an incompatible config ({'; '.join(diffs)}); use the original settings or a "
            "new run.out_dir (to fine-tune from it instead, set model.init_from)"
        )
