"""One model I/O for every model package (this tokenizer and ``bitwise_ar``'s transformer), on ``safetensors``.

A model directory written by :func:`save_model_dir` holds::

    config.json        {"format": "<package>/<version>", "config": {...}}
    model.safetensors  every tensor of the state dict, each in its own dtype (nothing is cast on save)

Loading is lazy: :func:`load_weights` memory-maps the file (``safetensors.torch.load_file``), so a tensor's bytes are
paged in when first touched and a model built on the ``meta`` device and filled with
``load_state_dict(..., assign=True)`` (:func:`assign_weights`) uses the mapped pages as its parameters: peak memory to
load a checkpoint is about its size, not twice it. A requested ``device``/``dtype`` is applied one tensor at a time.
The mapping is private (copy-on-write), so training a loaded model never writes to the file, and files are replaced
atomically, so saving over a directory a live model was loaded from is safe.

Also here: :class:`CheckpointMismatchError` (a checkpoint that does not fit the model, for both packages) and
:func:`state_fingerprint` (a short hash identifying a set of weights).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "CheckpointMismatchError",
    "assign_weights",
    "load_weights",
    "place_tensor",
    "read_model_config",
    "save_model_dir",
    "save_weights",
    "state_fingerprint",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

Device = str | torch.device
ModuleT = TypeVar("ModuleT", bound=nn.Module)


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model: missing or unexpected keys, or different shapes."""


def place_tensor(tensor: torch.Tensor, *, device: Device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``tensor`` on ``device`` with floating-point values cast to ``dtype`` (``None``: unchanged; no copy if both are)."""
    target = dtype if dtype is not None and tensor.is_floating_point() else None
    if device is None and target is None:
        return tensor
    return tensor.to(device=device, dtype=target)


# ---------------------------------------------------------------------------------------------------- weights files
def save_weights(
    state: Mapping[str, torch.Tensor], path: str | os.PathLike[str], *, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``state`` to a safetensors file, each tensor in its own dtype, atomically (temp file + ``os.replace``)."""
    path = Path(path)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=dict(metadata) if metadata else None)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_weights(
    path: str | os.PathLike[str], *, device: Device | None = None, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, memory-mapped (pages read on first touch).

    ``device``/``dtype`` (see :func:`place_tensor`) are applied one tensor at a time, so no second full copy of the
    checkpoint is ever held. A missing file is ``FileNotFoundError``; a damaged one ``ValueError`` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {reason}") from None
    for name in list(state):
        state[name] = place_tensor(state[name], device=device, dtype=dtype)
    return state


def assign_weights(
    factory: Callable[[], ModuleT],
    state: Mapping[str, torch.Tensor],
    *,
    check: Callable[[ModuleT, Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]] | None = None,
    owned: bool = True,
) -> ModuleT:
    """Build ``factory()`` on the ``meta`` device and make ``state``'s tensors its parameters (no init, no copy).

    ``check(model, state)`` validates (raising :class:`CheckpointMismatchError`) and may return a renamed state.
    ``owned=False`` means the caller keeps using these tensors: they are cloned, so the model never aliases them.
    Returns the model in eval mode.
    """
    with torch.device("meta"):
        model = factory()
    if check is not None:
        state = check(model, state)
    if not owned:
        state = {name: tensor.clone() for name, tensor in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:  # a non-persistent buffer is not in a state dict; a model that has one must not be built this way
        raise RuntimeError(f"{type(model).__name__} has tensors no checkpoint holds: {left[:5]}")
    return model.eval()


# ---------------------------------------------------------------------------------------------------- model directories
def save_model_dir(
    directory: str | os.PathLike[str], state: Mapping[str, torch.Tensor], *, format: str, config: Mapping[str, Any]
) -> Path:
    """Write ``config.json`` (``{"format", "config"}``) and ``model.safetensors`` (dtypes kept) to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(state, directory / WEIGHTS_FILE, metadata={"format": format})
    tmp = directory / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps({"format": format, "config": dict(config)}, indent=2) + "\n")
    os.replace(tmp, directory / CONFIG_FILE)
    return directory


def read_model_config(directory: str | os.PathLike[str], *, format: str, hint: str = "") -> dict[str, Any]:
    """The ``config`` entry of a :func:`save_model_dir` directory, after checking its layout and ``format``.

    ``hint`` is appended to the error for a missing directory (how to make one).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"model directory {directory} not found (expected {CONFIG_FILE} and {WEIGHTS_FILE} inside{hint})"
        )
    for path in (directory / CONFIG_FILE, directory / WEIGHTS_FILE):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; a {format} directory holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    path = directory / CONFIG_FILE
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != format or not isinstance(payload.get("config"), dict):
        raise ValueError(f"{path} is not a {format} config (expected keys 'format' and 'config')")
    return payload["config"]


# ---------------------------------------------------------------------------------------------------- fingerprints
def state_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """A 16-hex-digit hash of a state dict's names, shapes and values.

    Floating-point values are hashed after rounding to bfloat16, so the same weights held in float32 or bfloat16 share
    a fingerprint (a float16 copy usually does not: rounding twice moves some values); integer tensors exactly.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        if tensor.is_floating_point():
            tensor = tensor.to(torch.bfloat16)
        data = tensor.to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}\0{tuple(tensor.shape)}\0{data.dtype}\0".encode())
        if data.numel():
            digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
