"""State dicts of the Infinity transformer, without the model class: official checkpoints read and their keys
converted, configs inferred from shapes, strict checks, and our ``save_pretrained`` directory format.

Official files (reference §8):

* ``infinity_2b_reg.pth`` / ``infinity_125M_256x256.pth``: a flat torch-pickled state dict;
* fine-tuned training checkpoints: the same dict nested under ``['trainer']['gpt_fsdp']``;
* ``infinity_8b_weights/``: safetensors shards plus ``model.safetensors.index.json``.

Official key names are used unchanged except one documented mapping: the official model groups its blocks into
``block_chunks.{c}.module.{j}`` (block index i = c * blocks_per_chunk + j); ours is a flat ``blocks.{i}``.
:func:`convert_official_state_dict` does that mapping and nothing else; loading is strict.

Our format (``save_pretrained``): a directory with ``config.json`` (``{"format": "bitwise-ar/1", "config": {...}}``) and
``model.safetensors``, read and written by the model I/O shared with the tokenizer (:mod:`bsq_tokenizer.model_io`:
memory-mapped loading, dtypes kept on save, one :class:`CheckpointMismatchError`).

:class:`~bitwise_ar.model.InfinityTransformer` loads itself through these functions; :mod:`bitwise_ar.weights` is the
public module-level API on top.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from bsq_tokenizer.model_io import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointMismatchError,
    assign_weights,
    load_weights,
    place_tensor,
    read_model_config,
    save_model_dir,
)

from bitwise_ar.config import InfinityConfig

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "SHARD_INDEX",
    "WEIGHTS_FILE",
    "CheckpointMismatchError",
    "build_strict",
    "check_state_dict",
    "convert_official_state_dict",
    "infer_config",
    "read_config",
    "read_official_checkpoint",
    "save_pretrained",
    "to_official_state_dict",
]

logger = logging.getLogger(__name__)

FORMAT = "bitwise-ar/1"
SHARD_INDEX = "model.safetensors.index.json"

_CHUNK_KEY = re.compile(r"^block_chunks\.(\d+)\.module\.(\d+)\.(.+)$")
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


# ---------------------------------------------------------------------------------------------------- reading files
def _torch_load(path: Path) -> Any:
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointMismatchError(
            f"{path} is not a readable torch checkpoint (truncated, corrupt or not a state dict): {reason}"
        ) from None


def _load_shards(index_path: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{index_path} is not a safetensors shard index (needs a 'weight_map'): {err}") from None
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise FileNotFoundError(f"shard {shard_path} listed in {index_path.name} is missing")
        state.update(load_weights(shard_path))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointMismatchError(f"{len(missing)} keys of {index_path.name} are in no shard: {missing[:10]}")
    return state


def read_official_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The raw state dict of an official checkpoint file or directory (no renaming).

    Accepts a ``.pth`` (flat, or nested under ``['trainer']['gpt_fsdp']``), a single ``.safetensors`` file, a shard
    index ``*.index.json``, or a directory holding ``model.safetensors.index.json`` / ``*.safetensors`` / one ``.pth``.
    Every format is memory-mapped: tensors are read from disk when first touched.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"official checkpoint {path} not found (download it from the FoundationVision/Infinity HF repo)")
    if path.is_dir():
        if (path / SHARD_INDEX).is_file():
            return _load_shards(path / SHARD_INDEX)
        candidates = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.pth"))
        if len(candidates) != 1:
            raise FileNotFoundError(
                f"{path} holds no {SHARD_INDEX} and {len(candidates)} .safetensors/.pth files; point at one file"
            )
        path = candidates[0]
    if path.name.endswith(".index.json"):
        return _load_shards(path)
    if path.suffix == ".safetensors":
        return load_weights(path)
    obj = _torch_load(path)
    if isinstance(obj, Mapping) and "trainer" in obj:
        trainer = obj["trainer"]
        if not isinstance(trainer, Mapping) or "gpt_fsdp" not in trainer:
            raise CheckpointMismatchError(f"{path}: a training checkpoint must hold ['trainer']['gpt_fsdp']")
        obj = trainer["gpt_fsdp"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointMismatchError(f"{path} is not a state dict of tensors (nor a checkpoint with trainer/gpt_fsdp)")
    return dict(obj)


# ---------------------------------------------------------------------------------------------------- conversion
def convert_official_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``block_chunks.{c}.module.{j}.*`` to ``blocks.{c * n + j}.*`` (n = blocks per chunk); nothing else.

    A state dict already using ``blocks.{i}`` (the official layout with one chunk, or ours) passes through.
    """
    chunked = {k: _CHUNK_KEY.match(k) for k in state}
    per_chunk = 1 + max((int(m[2]) for m in chunked.values() if m), default=-1)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = chunked[key]
        if m:
            key = f"blocks.{int(m[1]) * per_chunk + int(m[2])}.{m[3]}"
        if key in out:
            raise CheckpointMismatchError(f"key {key} appears twice after mapping block chunks (mixed layouts?)")
        out[key] = value
    return out


def to_official_state_dict(state: Mapping[str, torch.Tensor], block_chunks: int) -> dict[str, torch.Tensor]:
    """Inverse of :func:`convert_official_state_dict` for ``block_chunks`` chunks (8 for the released 2B)."""
    depth = 1 + max(int(m[1]) for k in state if (m := _BLOCK_KEY.match(k)))
    if depth % block_chunks:
        raise ValueError(f"depth {depth} is not divisible by block_chunks={block_chunks}")
    per_chunk = depth // block_chunks
    out = {}
    for key, value in state.items():
        m = _BLOCK_KEY.match(key)
        if m:
            i = int(m[1])
            key = f"block_chunks.{i // per_chunk}.module.{i % per_chunk}.{m[2]}"
        out[key] = value
    return out


def infer_config(state: Mapping[str, torch.Tensor], **overrides: Any) -> InfinityConfig:
    """Read the architecture off the tensor shapes of a converted state dict (``blocks.{i}`` keys).

    Spatial patchify (the 8B) cannot be seen in shapes; pass ``spatial_patchify=True`` or use the preset.
    """
    try:
        C, d = state["word_embed.weight"].shape
        maxlen, Ct = state["cfg_uncond"].shape
        heads = state["blocks.0.sa.scale_mul_1H11"].shape[1]
        ffn = state["blocks.0.ffn.fc1.weight"].shape[0]
        num_out = state["head.weight"].shape[0]
        levels = state["lvl_embed.weight"].shape[0]
    except KeyError as err:
        raise CheckpointMismatchError(f"not an Infinity transformer state dict: key {err.args[0]!r} is missing") from None
    depth = 1 + max(int(m[1]) for k in state if (m := _BLOCK_KEY.match(k)))
    if num_out == 2 * d:
        head_type = "bits"
    elif num_out == 2**d:
        head_type = "index"
    else:
        raise CheckpointMismatchError(f"head has {num_out} outputs, neither 2d={2 * d} (bits) nor 2^d (index)")
    mlp_ratio = ffn / C
    kwargs: dict[str, Any] = dict(
        depth=depth, embed_dim=C, num_heads=heads, mlp_ratio=mlp_ratio, codebook_dim=d, text_channels=Ct,
        text_maxlen=maxlen, num_level_embeddings=levels, head_type=head_type, drop_path_rate=0.0,
    )
    kwargs.update(overrides)
    config = InfinityConfig(**kwargs)
    if config.ffn_hidden != ffn:  # the rounding rule maps several ratios onto one width; use the exact one
        config = config.replace(mlp_ratio=ffn / C)
    return config


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointMismatchError` listing missing keys, unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:
        parts = [f"{source} does not match the model ({type(model).__name__})"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                shown = ", ".join(items[:20]) + (f", ... ({len(items) - 20} more)" if len(items) > 20 else "")
                parts.append(f"{len(items)} {title}: {shown}")
        raise CheckpointMismatchError("; ".join(parts))


def build_strict(
    factory: Callable[[], torch.nn.Module],
    state: Mapping[str, torch.Tensor],
    source: str,
    *,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    owned: bool = True,
) -> torch.nn.Module:
    """``factory()`` built on the meta device with ``state`` as its parameters, after a strict :func:`check_state_dict`.

    ``device`` / ``dtype`` are applied per tensor; ``owned`` says the tensors are ours (memory-mapped from a file)
    and need no copy; a caller's state dict is cloned so that the model never aliases it.
    """

    def check(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        check_state_dict(model, state, source)
        placed = {k: place_tensor(v, device=device, dtype=dtype) for k, v in state.items()}
        # a tensor place_tensor moved or cast is already a copy; only the caller's own ones need cloning
        return placed if owned else {k: v.clone() if v is state[k] else v for k, v in placed.items()}

    return assign_weights(factory, state, check=check)


# ---------------------------------------------------------------------------------------------------- our format
def save_pretrained(model: torch.nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Write ``config.json`` + ``model.safetensors`` to ``directory``; returns it.

    Every tensor is saved in its own dtype (a model with bfloat16 blocks gives a file with bfloat16 blocks; nothing is
    cast).
    """
    return save_model_dir(directory, model.state_dict(), format=FORMAT, config=model.config.to_dict())


def read_config(directory: str | os.PathLike[str]) -> InfinityConfig:
    """The :class:`InfinityConfig` stored in a ``save_pretrained`` directory."""
    return InfinityConfig.from_dict(
        read_model_config(directory, format=FORMAT, hint="; convert an official checkpoint with `bitwise-ar convert-official`")
    )
