"""Architecture configuration of the Infinity transformer and its named presets.

Letters used in tensor names across this package: B batch, L tokens (all scales packed), C model width, D condition
width (= C), d bits per token, V logits per token (2d for the bitwise head, 2^d for the index head), K scales,
h/w token grid of one scale, T text tokens, Ct text-encoder width, H heads, hd head width.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

HeadType = Literal["bits", "index"]

# The largest index-classifier head we allow (2^16 = 65,536 classes); beyond that the IVC is the only sane choice.
MAX_INDEX_HEAD_BITS = 16


@dataclass(frozen=True, kw_only=True)
class InfinityConfig:
    """Hyper-parameters of an Infinity transformer (paper Sec. 3, reference §1-§2).

    Only values that change the architecture or the state-dict shapes live here; run settings (resolution, cfg, seed)
    are arguments of the sampler and pipeline.
    """

    depth: int
    embed_dim: int
    num_heads: int
    mlp_ratio: float = 4.0
    codebook_dim: int = 32
    """d: bits per transformer token (56 for the 8B, whose tokenizer has 14 bits and a 2x2 spatial patchify)."""
    spatial_patchify: bool = False
    """The tokenizer latent is 2x2 pixel-unshuffled into one token (8B). Token grid = latent grid / 2."""
    text_channels: int = 2048
    """Ct: width of the text-encoder features (flan-t5-xl: 2048)."""
    text_maxlen: int = 512
    """Rows of the learned null-text embedding `cfg_uncond` (max prompt tokens)."""
    norm_eps: float = 1e-6
    num_level_embeddings: int = 15
    """Rows of `lvl_embed`: the maximum number of scales."""
    rope_base: float = 10000.0
    head_type: HeadType = "bits"
    """"bits": the Infinite-Vocabulary Classifier (2 logits per bit). "index": a conventional 2^d-way classifier
    (ablation; only for small d)."""
    drop_path_rate: float = 0.0
    """Stochastic depth at the last block (linearly spaced from 0); the official recipe trains with 0.1."""
    cond_drop_rate: float = 0.1
    """Probability of replacing a prompt by the null text during training (for CFG)."""

    def __post_init__(self) -> None:
        for name in ("depth", "embed_dim", "num_heads", "codebook_dim", "text_channels", "text_maxlen"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"InfinityConfig.{name} must be a positive integer, got {value!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}; pick a width that is a "
                f"multiple of the head count (e.g. {self.num_heads * 64})"
            )
        if self.head_dim % 4:
            raise ValueError(
                f"head_dim={self.head_dim} (embed_dim / num_heads) must be a multiple of 4 for RoPE-2D "
                "(half for rows, half for columns, in rotation pairs)"
            )
        if self.text_pool_dim_per_head * self.text_pool_num_heads != self.embed_dim:
            raise ValueError(
                f"embed_dim={self.embed_dim} must be divisible by the text-pool head count {self.text_pool_num_heads} "
                f"(= text_channels {self.text_channels} // {self._text_pool_slice})"
            )
        if self.mlp_ratio <= 0 or self.ffn_hidden < 1:
            raise ValueError(f"mlp_ratio={self.mlp_ratio} gives an empty FFN; use a positive ratio such as 4.0")
        if self.spatial_patchify and self.codebook_dim % 4:
            raise ValueError(f"spatial_patchify needs codebook_dim divisible by 4 (2x2 patches), got {self.codebook_dim}")
        if self.head_type not in ("bits", "index"):
            raise ValueError(f"head_type must be 'bits' or 'index', got {self.head_type!r}")
        if self.head_type == "index" and self.codebook_dim > MAX_INDEX_HEAD_BITS:
            raise ValueError(
                f"head_type='index' needs 2^d logits; d={self.codebook_dim} is too large (max {MAX_INDEX_HEAD_BITS}). "
                "Use head_type='bits' (the Infinite-Vocabulary Classifier)."
            )
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if not 0.0 <= self.cond_drop_rate <= 1.0:
            raise ValueError(f"cond_drop_rate must be in [0, 1], got {self.cond_drop_rate}")
        if self.num_level_embeddings < 1:
            raise ValueError("num_level_embeddings must be >= 1")
        if self.norm_eps <= 0:
            raise ValueError(f"norm_eps must be positive, got {self.norm_eps}")

    # ----- derived values -----
    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def cond_dim(self) -> int:
        """D: width of the pooled text condition (equal to the model width in every official model)."""
        return self.embed_dim

    @property
    def ffn_hidden(self) -> int:
        """FFN width: round(mlp_ratio * C / 256) * 256 with Python's half-to-even rounding (official rule)."""
        return round(self.mlp_ratio * self.embed_dim / 256) * 256

    @property
    def _text_pool_slice(self) -> int:
        # The official pool uses 128-wide text slices per head when D <= 4096, 64-wide otherwise.
        return 128 if self.cond_dim <= 4096 else 64

    @property
    def text_pool_num_heads(self) -> int:
        return max(1, self.text_channels // self._text_pool_slice)

    @property
    def text_pool_dim_per_head(self) -> int:
        return self.cond_dim // self.text_pool_num_heads

    @property
    def num_logits(self) -> int:
        """V: head outputs per token (2d for the bitwise head, 2^d for the index head)."""
        return 2 * self.codebook_dim if self.head_type == "bits" else 2**self.codebook_dim

    @property
    def tokenizer_codebook_dim(self) -> int:
        """Bits per latent position of the paired tokenizer (d / 4 with the 2x2 spatial patchify)."""
        return self.codebook_dim // 4 if self.spatial_patchify else self.codebook_dim

    def replace(self, **changes: Any) -> InfinityConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InfinityConfig:
        """Build from a dict (e.g. a saved config.json); unknown keys are an error that lists the valid names."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown InfinityConfig keys {unknown}; valid keys: {sorted(names)}")
        return cls(**dict(data))


def _preset(depth: int, width: int, heads: int, **kw: Any) -> InfinityConfig:
    return InfinityConfig(depth=depth, embed_dim=width, num_heads=heads, drop_path_rate=0.1, **kw)


PRESETS: dict[str, InfinityConfig] = {
    # Tiny model for tests and the CPU demo; pairs with a 16-bit tokenizer.
    "debug": InfinityConfig(
        depth=2, embed_dim=64, num_heads=2, codebook_dim=16, text_channels=64, text_maxlen=64, drop_path_rate=0.0
    ),
    # Paper Table 6 scaling family (official `infinity_layerN`).
    "infinity-layer12": _preset(12, 768, 8),
    "infinity-layer16": _preset(16, 1152, 12),
    "infinity-layer24": _preset(24, 1536, 16),
    "infinity-layer32": _preset(32, 2080, 20),
    "infinity-layer40": _preset(40, 2688, 24),
    "infinity-layer48": _preset(48, 3360, 28),
    # Released checkpoints.
    "infinity-125m": _preset(12, 768, 8),
    "infinity-2b": _preset(32, 2048, 16),
    "infinity-8b": _preset(40, 3584, 28, codebook_dim=56, spatial_patchify=True),
}


def get_preset(name: str) -> InfinityConfig:
    """The preset called ``name``; an unknown name is a ValueError listing the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


# Official switches that this implementation reproduces only at their released values: name -> accepted values.
_OFFICIAL_FIXED: dict[str, tuple[Any, ...]] = {
    "shared_aln": (True, 1),
    "head_aln": (True, 1),
    "cos_attn": (True, 1),
    "rms_norm": (False, 0),
    "swiglu": (False, 0),
    "nm0": (False, 0),
    "head_depth": (1,),
    "rope2d_each_sa_layer": (1, True),
    "rope2d_normalized_by_hw": (2,),
    "add_lvl_embeding_only_first_block": (1, True),
    "cross_attn_layer_scale": (-1, -1.0),
    "video_frames": (1,),
}


def from_official_config(official: Mapping[str, Any]) -> InfinityConfig:
    """Map the official ``Infinity(...)`` constructor arguments to an :class:`InfinityConfig`.

    ``official`` uses the official names (``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``, ``text_channels``,
    ``text_maxlen``, ``codebook_dim``/``d_vae``, ``use_bit_label``, ``apply_spatial_patchify``, ...). Switches whose
    non-default values are not implemented here (e.g. ``swiglu=True``) raise a ValueError naming the switch.
    """
    for name, accepted in _OFFICIAL_FIXED.items():
        if name in official and official[name] not in accepted:
            raise ValueError(
                f"official switch {name}={official[name]!r} is not supported (only {accepted[0]!r}, the released value)"
            )
    try:
        depth, width, heads = int(official["depth"]), int(official["embed_dim"]), int(official["num_heads"])
    except KeyError as err:
        raise ValueError(f"official config lacks {err.args[0]!r}; need depth, embed_dim and num_heads") from None
    patchify = bool(official.get("apply_spatial_patchify", 0))
    if "d_vae" in official:
        bits = int(official["d_vae"])
    elif "codebook_dim" in official:
        bits = int(official["codebook_dim"]) * (4 if patchify else 1)
    else:
        raise ValueError("official config lacks codebook_dim / d_vae (bits per token)")
    use_bit_label = int(official.get("use_bit_label", 1))
    return InfinityConfig(
        depth=depth,
        embed_dim=width,
        num_heads=heads,
        mlp_ratio=float(official.get("mlp_ratio", 4.0)),
        codebook_dim=bits,
        spatial_patchify=patchify,
        text_channels=int(official.get("text_channels", 2048)),
        text_maxlen=int(official.get("text_maxlen", 512)),
        norm_eps=float(official.get("norm_eps", 1e-6)),
        num_level_embeddings=int(official.get("lvl_embed_rows", 15)),
        rope_base=float(official.get("rope_base", 10000.0)),
        head_type="bits" if use_bit_label else "index",
        drop_path_rate=float(official.get("drop_path_rate", 0.0)),
        cond_drop_rate=float(official.get("cond_drop_rate", 0.1)),
    )


def count_parameters_analytic(config: InfinityConfig) -> int:
    """Exact learnable parameter count from the formula (buffers such as ``zero_k_bias`` excluded)."""
    C, D, Ct, F, H = config.embed_dim, config.cond_dim, config.text_channels, config.ffn_hidden, config.num_heads
    text = config.text_maxlen * Ct + Ct  # cfg_uncond, text_norm
    text += config.text_pool_num_heads * config.text_pool_dim_per_head + D + 2 * D * Ct + D * D + D  # pool
    text += Ct * D + D + D * D + D  # text_proj_for_ca
    top = C + config.num_level_embeddings * C + (config.codebook_dim * C + C) + (6 * C * D + 6 * C)
    top += (2 * C * D + 2 * C) + (config.num_logits * C + config.num_logits)
    block = 6 * C + H + 2 * C + 3 * C * C + C * C + C  # ada_gss, scale_mul, q/v bias, qkv, proj
    block += C + C * C + C + 2 * C * D + C * C + C  # ca: v_bias, mat_q, mat_kv, proj
    block += C * F + F + F * C + C + 2 * C  # ffn, ca_norm
    return text + top + config.depth * block


# ---------------------------------------------------------------------------------------------------- LoRA
LORA_TARGETS: tuple[str, ...] = ("sa.mat_qkv", "sa.proj", "ca.mat_q", "ca.mat_kv", "ca.proj", "ffn.fc1", "ffn.fc2")
"""Every projection a LoRA adapter can wrap (:mod:`bitwise_ar.lora`), as ``<layer>.<linear>`` inside each block."""


@dataclass(frozen=True, kw_only=True)
class LoraSettings:
    """A LoRA adapter (:mod:`bitwise_ar.lora`) and the ``[lora]`` section of a training run; ``rank = 0`` = none."""

    rank: int = 0
    alpha: float = 16.0
    """Scale of the update: ``alpha / rank`` multiplies ``B A x`` (Hu et al. 2021, Sec. 4.1)."""
    dropout: float = 0.0
    """Dropout on the adapter's input (training only)."""
    targets: tuple[str, ...] = LORA_TARGETS
    """Which projections of every block get an adapter (a subset of :data:`LORA_TARGETS`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        if self.rank < 0:
            raise ValueError(f"lora.rank must be >= 0 (0 = no adapter), got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown or not self.targets:
            raise ValueError(f"lora.targets {list(self.targets)} must be a non-empty subset of {list(LORA_TARGETS)}")

    @property
    def enabled(self) -> bool:
        return self.rank > 0
