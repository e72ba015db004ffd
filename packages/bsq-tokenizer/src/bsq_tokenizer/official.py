"""Reading the official ``infinity_vae_*.pth`` checkpoints: unwrapping, key spellings, strict checks, config inference."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .config import PRESETS, TokenizerConfig
from .model_io import CheckpointMismatchError

__all__ = [
    "OFFICIAL_MASK_KEYS",
    "CheckpointMismatchError",
    "infer_config",
    "load_official_state_dict",
    "match_state_dict",
    "suggest_preset",
]

OFFICIAL_MASK_KEYS = ("quantizer.lfq.mask", "quantize.lfq.mask")
_LIST_LIMIT = 25


def load_official_state_dict(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, object],
) -> dict[str, torch.Tensor]:
    """The autoencoder state dict of an official checkpoint.

    Accepts a path to a ``.pth``/``.pt`` file (loaded with ``weights_only=True``) or an already-loaded object: a dict with
    a ``"vae"`` entry (the released files), or an ``"ema"`` entry, or a plain state dict.
    """
    obj: object = path_or_state_dict
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise FileNotFoundError(
                f"official tokenizer checkpoint {path} not found; download infinity_vae_*.pth from the "
                "FoundationVision/Infinity release and pass its local path"
            )
        with path.open("rb") as handle:
            head = handle.read(4)
        if not head.startswith((b"PK\x03\x04", b"\x80")):  # a torch.save zip archive, or a legacy pickle
            what = "an empty file" if not head else f"a file starting with {head!r}"
            raise ValueError(
                f"cannot read {path}: {what} is not a PyTorch checkpoint; pass an official infinity_vae_*.pth or a "
                "tokenizer directory (config.json + model.safetensors)"
            )
        try:
            # mmap: the released files (~1.5 GB) also hold training state; only the 'vae' tensors get paged in
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            try:  # legacy (non-zip) checkpoints cannot be memory-mapped
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # torch raises several types for corrupt or non-weights pickles
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ValueError(
                    f"cannot read {path} as a PyTorch checkpoint of tensors (truncated, corrupt, or holding other "
                    f"objects): {reason}"
                ) from None
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict or a dict with a 'vae' entry, got {type(obj).__name__}")
    for wrapper in ("vae", "ema"):
        if wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"entry {key!r} of the checkpoint is a {type(value).__name__}, not a tensor; expected the autoencoder state "
                "dict (or a dict holding it under 'vae')"
            )
        state[str(key)] = value
    return state


def _plain_spelling(key: str) -> str:
    # official loader accepts 'x.conv_in.weight' for 'x.conv_in.conv.weight' and 'x.norm1.weight' for 'x.norm1.norm.weight'
    return re.sub(r"\.(conv|norm)\.(weight|bias)$", r".\2", key)


def _fmt(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... ({len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else "")


def match_state_dict(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], *, hint: str = ""
) -> dict[str, torch.Tensor]:
    """Rename ``state`` to the keys of ``expected`` (both spellings accepted) and check it strictly.

    The official quantiser mask buffers are accepted and dropped. Raises :class:`CheckpointMismatchError` listing
    every missing and unexpected key, or the shape mismatches.
    """
    plain_to_canonical = {_plain_spelling(k): k for k in expected}
    renamed: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        if key in OFFICIAL_MASK_KEYS:
            continue
        canonical = key if key in expected else plain_to_canonical.get(key)
        if canonical is None or canonical in renamed:
            unexpected.append(key)
        else:
            renamed[canonical] = value
    missing = [k for k in expected if k not in renamed]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_fmt(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_fmt(sorted(unexpected))}")
        raise CheckpointMismatchError(
            f"checkpoint does not match the tokenizer architecture{hint}; " + "; ".join(parts)
        )
    wrong = [
        f"{k}: checkpoint {tuple(renamed[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if tuple(renamed[k].shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise CheckpointMismatchError(
            f"checkpoint is for a different architecture{hint}; {len(wrong)} shape mismatch(es): {_fmt(wrong)}"
        )
    return renamed


def _get(state: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key in state:
        return state[key]
    plain = _plain_spelling(key)
    if plain in state:
        return state[plain]
    raise CheckpointMismatchError(f"cannot infer the architecture: the checkpoint has no {key!r}")


def infer_config(
    state: Mapping[str, torch.Tensor], *, spatial_patchify: bool = False, norm_groups: int | None = None
) -> TokenizerConfig:
    """Read the architecture (d, base width, multipliers, res blocks, stride) off an official state dict's shapes.

    ``spatial_patchify``, the quantizer kind and the GroupNorm group count are not visible in the weights: the
    official GroupNorm rule (32 groups, else 24) is assumed unless ``norm_groups`` is given; pass a preset for the
    8B tokenizer.
    """
    keys = [k for k in state if k not in OFFICIAL_MASK_KEYS]
    d = _get(state, "encoder.conv_out.conv.weight").shape[0]
    base = _get(state, "encoder.conv_in.conv.weight").shape[0]
    levels = sorted({int(m.group(1)) for k in keys if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    if not levels:
        raise CheckpointMismatchError("cannot infer the architecture: no encoder.down.* keys")
    enc_mult = tuple(_get(state, f"encoder.down.{i}.block.0.conv1.conv.weight").shape[0] // base for i in levels)
    dec_mult = tuple(_get(state, f"decoder.up.{i}.block.0.conv1.conv.weight").shape[0] // base for i in levels)
    n_blocks = len({int(m.group(1)) for k in keys if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))})
    n_down = sum(1 for i in levels if any(k.startswith(f"encoder.down.{i}.downsample.") for k in keys))
    widths = sorted({base * m for m in enc_mult + dec_mult})
    if norm_groups is None and not all(c % 32 == 0 or c % 24 == 0 for c in widths):
        # GroupNorm's group count is not stored in a state dict; only the official rule (32, else 24) is inferable
        raise CheckpointMismatchError(
            f"cannot infer the GroupNorm groups for channel widths {widths} (not multiples of 32 or 24, so not an "
            "official architecture); pass the TokenizerConfig explicitly"
        )
    return TokenizerConfig(
        codebook_dim=int(d),
        base_channels=int(base),
        channel_multipliers=enc_mult,
        decoder_channel_multipliers=None if dec_mult == enc_mult else dec_mult,
        num_res_blocks=n_blocks,
        patch_size=2**n_down,
        spatial_patchify=spatial_patchify,
        norm_groups=norm_groups or 32,
        description="inferred from checkpoint shapes",
    )


def suggest_preset(config: TokenizerConfig) -> str | None:
    """Name of a preset with the same architecture (ignoring description and patchify), if any."""
    for name, preset in PRESETS.items():
        if (
            preset.codebook_dim == config.codebook_dim
            and preset.base_channels == config.base_channels
            and preset.channel_multipliers == config.channel_multipliers
            and preset.decoder_mult == config.decoder_mult
            and preset.num_res_blocks == config.num_res_blocks
            and preset.patch_size == config.patch_size
        ):
            return name
    return None
