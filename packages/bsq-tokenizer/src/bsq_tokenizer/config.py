"""Tokenizer architecture configuration, named presets, and the mapping from the official constructor arguments."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["PRESETS", "TokenizerConfig", "config_from_official", "norm_groups_for"]

QuantizerKind = Literal["bsq", "lfq"]


def norm_groups_for(channels: int, preferred: int) -> int:
    """GroupNorm group count for ``channels``: ``preferred`` if it divides, else 24 if that divides (official rule)."""
    if channels % preferred == 0:
        return preferred
    if channels % 24 == 0:
        return 24
    raise ValueError(
        f"{channels} channels cannot be split into {preferred} (or 24) GroupNorm groups; "
        "choose base_channels/channel_multipliers so every width is a multiple of norm_groups"
    )


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    """Architecture of the bitwise multi-scale tokenizer (a Flux/LDM-style conv autoencoder + BSQ/LFQ bits).

    Field names are ours; :func:`config_from_official` maps the official constructor arguments onto them.

    Attributes:
        codebook_dim: d, bits per latent token (= latent channels).
        base_channels: width of the first level (official ``base_ch``).
        channel_multipliers: per-level width multipliers of the encoder (official ``encoder_ch_mult``).
        decoder_channel_multipliers: the decoder's (official ``decoder_ch_mult``); ``None`` = same as the encoder.
        num_res_blocks: ResnetBlocks per encoder level (the decoder uses one more per level).
        patch_size: total spatial stride of the encoder, a power of two (16, or 8 for the 8B tokenizer).
        spatial_patchify: the transformer sees 2x2 groups of latent tokens as one token (4 d bits); the 8B model.
        quantizer: ``"bsq"`` (unit-sphere codes +-1/sqrt(d), the released tokenizers) or ``"lfq"`` (codes +-1).
        norm_groups: GroupNorm groups (official: 32, falling back to 24 when 32 does not divide the width).
        norm_eps: GroupNorm epsilon.
        image_channels: 3 (RGB).
    """

    codebook_dim: int = 32
    base_channels: int = 128
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 4, 4)
    decoder_channel_multipliers: tuple[int, ...] | None = None
    num_res_blocks: int = 2
    patch_size: int = 16
    spatial_patchify: bool = False
    quantizer: QuantizerKind = "bsq"
    norm_groups: int = 32
    norm_eps: float = 1e-6
    image_channels: int = 3
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_multipliers", tuple(int(m) for m in self.channel_multipliers))
        if self.decoder_channel_multipliers is not None:
            object.__setattr__(
                self, "decoder_channel_multipliers", tuple(int(m) for m in self.decoder_channel_multipliers)
            )
        if not (isinstance(self.codebook_dim, int) and 1 <= self.codebook_dim <= 64):
            raise ValueError(f"codebook_dim must be an int in 1..64 (bits per token), got {self.codebook_dim!r}")
        if self.base_channels < 1 or self.num_res_blocks < 1:
            raise ValueError("base_channels and num_res_blocks must be >= 1")
        if self.patch_size < 2 or self.patch_size & (self.patch_size - 1):
            raise ValueError(
                f"patch_size must be a power of two >= 2 (16 or 8 for the released models), got {self.patch_size}"
            )
        for name in ("channel_multipliers", "decoder_channel_multipliers"):
            mult = getattr(self, name)
            if mult is None:
                continue
            if not mult or any(m < 1 for m in mult):
                raise ValueError(f"{name} must be a non-empty tuple of positive ints, got {mult}")
            if len(mult) - 1 < self.num_downsamples:
                raise ValueError(
                    f"patch_size {self.patch_size} needs {self.num_downsamples} downsampling levels, so {name} needs at "
                    f"least {self.num_downsamples + 1} entries (got {len(mult)})"
                )
        if len(self.decoder_mult) != len(self.channel_multipliers):
            raise ValueError("encoder and decoder must have the same number of levels")
        if self.quantizer not in ("bsq", "lfq"):
            raise ValueError(f"quantizer must be 'bsq' or 'lfq', got {self.quantizer!r}")
        if self.spatial_patchify and self.codebook_dim * 4 > 64:
            raise ValueError("spatial_patchify needs 4 * codebook_dim <= 64 bits per transformer token")
        if self.image_channels < 1:
            raise ValueError("image_channels must be >= 1")
        for channels in {*self.encoder_level_channels, *self.decoder_level_channels}:
            norm_groups_for(channels, self.norm_groups)

    @property
    def decoder_mult(self) -> tuple[int, ...]:
        """Decoder channel multipliers (the encoder's unless set)."""
        return self.decoder_channel_multipliers or self.channel_multipliers

    @property
    def num_downsamples(self) -> int:
        """log2(patch_size): stride-2 downsamplings in the encoder (and upsamplings in the decoder)."""
        return int(math.log2(self.patch_size))

    @property
    def encoder_level_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * m for m in self.channel_multipliers)

    @property
    def decoder_level_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * m for m in self.decoder_mult)

    @property
    def codebook_size(self) -> int:
        """2**d (implicit; there is no codebook tensor)."""
        return 2**self.codebook_dim

    @property
    def code_scale(self) -> float:
        """Magnitude of one code entry: 1/sqrt(d) for BSQ, 1 for LFQ."""
        return 1.0 / math.sqrt(self.codebook_dim) if self.quantizer == "bsq" else 1.0

    @property
    def token_dim(self) -> int:
        """Bits per *transformer* token: 4 d with spatial patchify, else d."""
        return self.codebook_dim * 4 if self.spatial_patchify else self.codebook_dim

    @property
    def pad_multiple(self) -> int:
        """Images are padded to a multiple of this many pixels (latent stride, x2 with spatial patchify)."""
        return self.patch_size * (2 if self.spatial_patchify else 1)

    def replace(self, **changes: Any) -> TokenizerConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TokenizerConfig fields {unknown}; known fields: {sorted(known)}")
        kwargs = dict(data)
        for key in ("channel_multipliers", "decoder_channel_multipliers"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


def _released(d: int, description: str) -> TokenizerConfig:
    return TokenizerConfig(codebook_dim=d, description=description)


PRESETS: dict[str, TokenizerConfig] = {
    "debug": TokenizerConfig(
        codebook_dim=16,
        base_channels=16,
        channel_multipliers=(1, 1, 2, 2, 2),
        num_res_blocks=1,
        norm_groups=8,
        description="tiny random-weight model for tests and smoke runs (stride 16, d=16)",
    ),
    "d16": _released(16, "infinity_vae_d16.pth"),
    "d24": _released(24, "infinity_vae_d24.pth"),
    "d32": _released(32, "infinity_vae_d32.pth"),
    "d64": _released(64, "infinity_vae_d64.pth"),
    "d32reg": _released(32, "infinity_vae_d32reg.pth (the tokenizer of Infinity-2B)"),
    "d14-f8-patchify": TokenizerConfig(
        codebook_dim=14,
        channel_multipliers=(1, 2, 4, 4),
        patch_size=8,
        spatial_patchify=True,
        description="infinity_vae_d56_f8_14_patchify.pth (Infinity-8B): stride 8, 2x2 patchify -> 56 bits/token",
    ),
}


def config_from_official(official: dict[str, Any]) -> TokenizerConfig:
    """Map the official constructor hyper-parameters (``vae_model`` / ``AutoEncoder`` argument names) to a config.

    Accepts the fields ``codebook_dim``, ``base_ch``, ``num_res_blocks``, ``encoder_ch_mult``, ``decoder_ch_mult``,
    ``patch_size``, ``quantizer_type``, ``groupnorm_eps``, ``apply_spatial_patchify`` and checks that the switches this
    implementation does not support (``use_vae``, attention, non-2D convs, other norms or interpolation modes) are off.
    """

    def get(name: str, default: Any = None) -> Any:
        return official.get(name, default)

    checks = {
        "use_vae": (False, None),
        "cnn_attention": ("no", None),
        "cnn_type": ("2d", None),
        "norm_type": ("group", None),
        "z_interplote_up": ("trilinear", "bilinear", None),
        "z_interplote_down": ("area", None),
        "use_pxsf": (False, None),
        "use_decay_factor": (False, None),
        "ln_before_quant": (False, None),
    }
    for name, allowed in checks.items():
        if get(name) not in allowed:
            raise ValueError(f"official config {name}={get(name)!r} is not supported (supported: {allowed[:-1]})")
    if "codebook_dim" not in official:
        raise ValueError("official config has no 'codebook_dim'")
    qtype = str(get("quantizer_type", "MultiScaleBSQ")).lower()
    if "bsq" in qtype:
        quantizer: QuantizerKind = "bsq"
    elif "lfq" in qtype:
        quantizer = "lfq"
    else:
        raise ValueError(
            f"unsupported official quantizer_type {get('quantizer_type')!r} (MultiScaleBSQ or MultiScaleLFQ)"
        )
    enc = tuple(get("encoder_ch_mult", (1, 2, 4, 4, 4)))
    dec = tuple(get("decoder_ch_mult", enc))
    config = TokenizerConfig(
        codebook_dim=int(get("codebook_dim")),
        base_channels=int(get("base_ch", 128)),
        channel_multipliers=enc,
        decoder_channel_multipliers=None if dec == enc else dec,
        num_res_blocks=int(get("num_res_blocks", 2)),
        patch_size=int(get("patch_size", 16)),
        spatial_patchify=bool(get("apply_spatial_patchify", False)),
        quantizer=quantizer,
        norm_eps=float(get("groupnorm_eps", 1e-6)),
        description="converted from an official config",
    )
    for channels, groups in (get("groupnorm_groups") or {}).items():
        if norm_groups_for(int(channels), config.norm_groups) != int(groups):
            raise ValueError(
                f"official config uses {groups} GroupNorm groups for {channels} channels; only the 32/24 rule is supported"
            )
    return config
