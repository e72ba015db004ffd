"""``BSQTokenizer``: images <-> per-scale bits, with official-checkpoint loading and our own save format."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .autoencoder import Decoder, Encoder
from .bitfile import EncodedImages
from .config import PRESETS, TokenizerConfig, config_from_official
from .images import ImageInput, crop, pad_to_multiple, to_image_batch
from .model_io import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointMismatchError,
    assign_weights,
    load_weights,
    place_tensor,
    read_model_config,
    save_model_dir,
    state_fingerprint,
)
from .multiscale import multiscale_quantize, summed_codes_from_bits
from .official import infer_config, load_official_state_dict, match_state_dict, suggest_preset
from .schedules import schedule_for_latent
from .tiling import check_tiling, tiled_decode

__all__ = ["CONFIG_FILE", "FORMAT", "WEIGHTS_FILE", "BSQTokenizer", "EncodedImages", "WeightsMismatchError"]

logger = logging.getLogger(__name__)

FORMAT = "bsq-tokenizer/1"


def conv_memory_format(device: torch.device) -> torch.memory_format:
    """Channels-last (NHWC) activations on CUDA, where cuDNN's tensor-core convolutions want them; NCHW on CPU, where
    NHWC is only ~1.05x faster but PyTorch's NHWC GroupNorm kernel is less precise: it moves the official fixture's
    encoder features by 3.3e-4 and a random d32 decoder's 512x512 output by 1.5e-4 (beyond the official parity
    tolerance of 1e-4; 0.2 % of 8-bit pixels change), so CPU outputs remain those of the official code."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


BF16_DECODE_MAX_ABS = 0.06
BF16_DECODE_MEAN_ABS = 2 / 255


class WeightsMismatchError(ValueError):
    """Codes are being decoded with tokenizer weights other than the ones that encoded them."""


def _resolve_config(preset: str | TokenizerConfig | Mapping[str, Any] | None) -> TokenizerConfig | None:
    if preset is None or isinstance(preset, TokenizerConfig):
        return preset
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[preset]
    if isinstance(preset, Mapping):
        return config_from_official(dict(preset))
    raise ValueError(
        f"preset must be a preset name, a TokenizerConfig or an official config dict, got {type(preset).__name__}"
    )


class BSQTokenizer(nn.Module):
    """Bitwise multi-scale tokenizer: conv encoder -> multi-scale residual BSQ bits -> conv decoder.

    Tensors in and out are RGB ``(B, 3, H, W)`` in [-1, 1]. The high-level :meth:`encode` / :meth:`decode` /
    :meth:`reconstruct` accept any image size (padded to the stride and cropped back) and tensors, NumPy arrays or
    PIL images; the quantiser always runs in float32 while the convs follow the model's dtype and device.
    """

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        if not isinstance(config, TokenizerConfig):
            raise TypeError(f"config must be a TokenizerConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self._fingerprint: tuple[tuple[Any, ...], str] | None = None  # (weights' identity and versions, fingerprint)

    # ------------------------------------------------------------------ tensors
    @property
    def _param(self) -> torch.Tensor:
        return self.encoder.conv_in.conv.weight

    def weights_fingerprint(self) -> str:
        """A 16-hex-digit hash of the weights (:func:`bsq_tokenizer.model_io.state_fingerprint`), recorded in the codes
        :meth:`encode` returns and checked by :meth:`decode`.

        Computed once and cached; the cache is keyed by every tensor's storage and in-place version counter, so loading
        other weights or a training step computes it anew.
        """
        state = self.state_dict()
        try:
            key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in state.values())
        except RuntimeError:  # inference-mode tensors have no version counter: do not cache
            return state_fingerprint(state)
        if self._fingerprint is None or self._fingerprint[0] != key:
            self._fingerprint = (key, state_fingerprint(state))
        return self._fingerprint[1]

    def check_codes(self, codes: EncodedImages, *, allow_weights_mismatch: bool = False) -> None:
        """Raise if ``codes`` cannot be decoded by this tokenizer.

        ``ValueError`` for another bit depth or stride; :class:`WeightsMismatchError` naming both fingerprints when the
        codes record weights other than these (unless ``allow_weights_mismatch``). Codes that record no fingerprint
        (built by hand, or read from a version-1 ``.bsqb`` file) are not checked against the weights.
        """
        if not isinstance(codes, EncodedImages):
            raise TypeError(
                f"decode() takes EncodedImages (from encode() or a packed file), got {type(codes).__name__}"
            )
        if codes.codebook_dim != self.config.codebook_dim:
            raise ValueError(
                f"codes have d={codes.codebook_dim} bits per token but this tokenizer uses d={self.config.codebook_dim}"
            )
        if codes.patch_size != self.config.patch_size:
            raise ValueError(
                f"codes were made with stride {codes.patch_size}, this tokenizer has stride {self.config.patch_size}"
            )
        if allow_weights_mismatch or codes.weights_fingerprint is None:
            return
        ours = self.weights_fingerprint()
        if codes.weights_fingerprint != ours:
            theirs = codes.tokenizer_config
            other = ""
            if theirs is not None and theirs.replace(description="") != self.config.replace(description=""):
                other = (
                    f" (a different architecture: base_channels {theirs.base_channels} x "
                    f"{list(theirs.channel_multipliers)}, {theirs.num_res_blocks} res blocks vs "
                    f"{self.config.base_channels} x {list(self.config.channel_multipliers)}, "
                    f"{self.config.num_res_blocks})"
                )
            raise WeightsMismatchError(
                f"codes were encoded by tokenizer weights {codes.weights_fingerprint} but these weights are {ours}"
                f"{other}; decode with the weights that encoded them, or force it with allow_weights_mismatch=True "
                "(CLI: --allow-weights-mismatch)"
            )

    def _check_stride(self, size: Sequence[int], what: str) -> None:
        p = self.config.patch_size
        if size[0] % p or size[1] % p:
            raise ValueError(
                f"{what} size {tuple(size)} is not a multiple of the stride {p}; use encode()/reconstruct(), which pad"
            )

    def encode_features(self, images_B3HW: torch.Tensor) -> torch.Tensor:
        """Raw encoder features ``(B, d, H/p, W/p)`` of images in [-1, 1] whose H, W are multiples of the stride p."""
        if images_B3HW.ndim != 4 or images_B3HW.shape[1] != self.config.image_channels:
            raise ValueError(f"expected images (B, {self.config.image_channels}, H, W), got {tuple(images_B3HW.shape)}")
        self._check_stride(images_B3HW.shape[-2:], "image")
        x = images_B3HW.to(device=self._param.device, dtype=self._param.dtype)
        return self.encoder(x.contiguous(memory_format=conv_memory_format(x.device))).contiguous()

    def decode_features(
        self,
        summed_codes_BdHW: torch.Tensor,
        *,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Decode (summed) codes ``(B, d, h, w)`` to images ``(B, 3, h p, w p)`` clamped to [-1, 1].

        ``dtype=torch.bfloat16`` runs the decoder under bf16 autocast (convolutions in bf16, GroupNorm in float32 on
        CUDA), the fast path on a GPU; the image stays within :data:`BF16_DECODE_MAX_ABS` (max) and
        :data:`BF16_DECODE_MEAN_ABS` (mean, under one 8-bit level) of the float32 decode (tested with the demo
        tokenizer). ``None`` decodes in the model's dtype.

        ``tile_size`` (latent positions, e.g. 32 = 512 px at stride 16) decodes overlapping tiles one at a time and
        cross-fades them with linear ramps over ``tile_overlap`` positions (default ``tile_size // 4``), so peak
        activation memory is bounded by the tile instead of the image (see :mod:`bsq_tokenizer.tiling`).
        **Approximate**: GroupNorm statistics are computed per tile (and tile borders are zero-padded), so the
        result differs slightly from the full decode; a tile at least as large as the latent gives the exact full
        decode. ``None`` (default) decodes in one piece.
        """
        if summed_codes_BdHW.ndim != 4 or summed_codes_BdHW.shape[1] != self.config.codebook_dim:
            raise ValueError(
                f"expected codes (B, {self.config.codebook_dim}, h, w), got {tuple(summed_codes_BdHW.shape)}"
            )
        tiling = check_tiling(tile_size, tile_overlap)
        if dtype not in (None, torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be None, torch.float32 or torch.bfloat16, got {dtype}")
        z = summed_codes_BdHW.to(device=self._param.device, dtype=self._param.dtype)
        z = z.contiguous(memory_format=conv_memory_format(z.device))
        autocast = dtype == torch.bfloat16 and self._param.dtype != torch.bfloat16
        with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=autocast):
            if tiling is None:
                out = self.decoder(z)
            else:
                out = tiled_decode(
                    self.decoder, z, tile_size=tiling[0], overlap=tiling[1], patch_size=self.config.patch_size
                )
        return out.float().clamp(-1.0, 1.0).contiguous() if autocast else out.clamp(-1.0, 1.0).contiguous()

    def default_schedule(self, latent_h: int, latent_w: int) -> list[tuple[int, int]]:
        """The scale schedule used for a latent of this size (official table when it is one of its sizes).

        With spatial patchify the transformer grid is half the latent grid and every scale is doubled.
        """
        if self.config.spatial_patchify:
            if latent_h % 2 or latent_w % 2:
                raise ValueError(f"spatial patchify needs an even latent size, got {(latent_h, latent_w)}")
            return [(2 * h, 2 * w) for h, w in schedule_for_latent(latent_h // 2, latent_w // 2)]
        return schedule_for_latent(latent_h, latent_w)

    # ------------------------------------------------------------------ images
    @torch.no_grad()
    def encode(
        self,
        images: ImageInput,
        *,
        schedule: Sequence[tuple[int, int]] | None = None,
        value_range: tuple[float, float] | None = None,
    ) -> EncodedImages:
        """Encode images of any size to per-scale bits (see :class:`EncodedImages`).

        ``schedule`` defaults to :meth:`default_schedule` of the padded latent size; ``value_range`` overrides how
        float inputs are read (see :mod:`bsq_tokenizer.images`).
        """
        x = to_image_batch(images, value_range=value_range, channels=self.config.image_channels)
        size = (x.shape[-2], x.shape[-1])
        x = pad_to_multiple(x.to(device=self._param.device, dtype=self._param.dtype), self.config.pad_multiple)
        features = self.encode_features(x)
        sched = list(schedule) if schedule is not None else self.default_schedule(*features.shape[-2:])
        bits, _ = multiscale_quantize(features, sched, scale=self.config.code_scale)
        return EncodedImages(
            bits=bits,
            schedule=tuple(sched),
            image_size=size,
            patch_size=self.config.patch_size,
            code_scale=self.config.code_scale,
            spatial_patchify=self.config.spatial_patchify,
            tokenizer_config=self.config,
            weights_fingerprint=self.weights_fingerprint(),
        )

    @torch.no_grad()
    def decode(
        self,
        codes: EncodedImages,
        upto_scale: int | None = None,
        *,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        allow_weights_mismatch: bool = False,
    ) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [-1, 1] from bits; ``upto_scale=k`` uses only scales 1..k (progressive preview).

        ``tile_size`` / ``tile_overlap``: approximate low-memory tiled decode (see :meth:`decode_features`).
        Codes encoded by other weights are refused (:meth:`check_codes`) unless ``allow_weights_mismatch``.
        """
        self.check_codes(codes, allow_weights_mismatch=allow_weights_mismatch)
        summed = summed_codes_from_bits(
            [b.to(self._param.device) for b in codes.bits],
            codes.schedule,
            upto_scale=upto_scale,
            scale=self.config.code_scale,
        )
        return crop(self.decode_features(summed, tile_size=tile_size, tile_overlap=tile_overlap), codes.image_size)

    @torch.no_grad()
    def reconstruct(self, images: ImageInput, *, value_range: tuple[float, float] | None = None) -> torch.Tensor:
        """``decode(encode(images))``: reconstructions ``(B, 3, H, W)`` in [-1, 1], same size as the input."""
        return self.decode(self.encode(images, value_range=value_range))

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_official(
        cls,
        path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
        preset: str | TokenizerConfig | Mapping[str, Any] | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> BSQTokenizer:
        """Load an official ``infinity_vae_*.pth`` (or its state dict) strictly.

        ``preset`` is a preset name (``"d32reg"``, ...), a :class:`TokenizerConfig`, or an official config dict; with
        ``None`` the architecture is inferred from the tensor shapes (not possible for spatial patchify: pass
        ``"d14-f8-patchify"``). Both key spellings and the quantiser mask buffers are accepted; any missing or
        unexpected key or shape mismatch raises :class:`CheckpointMismatchError` listing them. A file is memory-mapped
        and its tensors become the parameters; an in-memory state dict is copied (the model never aliases it).
        ``device`` / ``dtype`` as in :meth:`from_pretrained`.
        """
        state = load_official_state_dict(path_or_state_dict)
        config = _resolve_config(preset)
        if config is None:
            config = infer_config(state)
        hint = ""
        try:
            inferred = infer_config(state, spatial_patchify=config.spatial_patchify, norm_groups=config.norm_groups)
            name = suggest_preset(inferred)
            if inferred != config:
                hint = (
                    f" (the checkpoint has codebook_dim={inferred.codebook_dim}, base_channels={inferred.base_channels}, "
                    f"channel_multipliers={inferred.channel_multipliers}, num_res_blocks={inferred.num_res_blocks}, "
                    f"patch_size={inferred.patch_size}"
                    + (f": use preset {name!r})" if name else "; pass a matching config or preset=None to infer it)")
                )
        except (CheckpointMismatchError, ValueError):
            pass
        return cls._assign(
            config, state, hint=hint, device=device, dtype=dtype, owned=isinstance(path_or_state_dict, (str, os.PathLike))
        )

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory`` (created if needed); returns the directory.

        Every tensor is saved in its own dtype (a bfloat16 model gives a bfloat16 file; nothing is cast).
        """
        return save_model_dir(directory, self.state_dict(), format=FORMAT, config=self.config.to_dict())

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> BSQTokenizer:
        """Load a directory written by :meth:`save_pretrained` (``config.json`` + ``model.safetensors``), strictly.

        The weights are memory-mapped and become the parameters without a copy; ``device`` (default: CPU) and ``dtype``
        (floating-point tensors only; default: as saved) are applied one tensor at a time.
        """
        path = Path(path)
        config = TokenizerConfig.from_dict(
            read_model_config(
                path, format=FORMAT, hint="; convert an official .pth with `bsq-tokenizer convert-official`"
            )
        )
        weights = path / WEIGHTS_FILE
        state = load_weights(weights, device=device, dtype=dtype)
        return cls._assign(config, state, hint=f" (in {weights})")

    @classmethod
    def _assign(
        cls,
        config: TokenizerConfig,
        state: Mapping[str, torch.Tensor],
        *,
        hint: str,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        owned: bool = True,
    ) -> BSQTokenizer:
        def check(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            renamed = match_state_dict(state, model.state_dict(), hint=hint)
            placed = {k: place_tensor(v, device=device, dtype=dtype) for k, v in renamed.items()}
            # a tensor that place_tensor moved or cast is already a copy; only the caller's own ones need cloning
            return placed if owned else {k: v.clone() if v is renamed[k] else v for k, v in placed.items()}

        return assign_weights(lambda: cls(config), state, check=check)

    def extra_repr(self) -> str:
        c = self.config
        return f"d={c.codebook_dim}, stride={c.patch_size}, quantizer={c.quantizer}, patchify={c.spatial_patchify}"
