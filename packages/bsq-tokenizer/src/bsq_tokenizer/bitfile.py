"""Encoded images (:class:`EncodedImages`, the output of :meth:`BSQTokenizer.encode`) and their compact,
self-describing file format (``.bsqb``): bits packed 8 per byte.

The type and its byte form live together so that :meth:`EncodedImages.pack` / :meth:`EncodedImages.unpack` need no
import back into :mod:`bsq_tokenizer.model`.

Layout of version 2, written today (all integers little-endian)::

    offset  size  field
    0       4     magic b"BSQB"
    4       1     format version (2)
    5       1     flags: bit 0 = LFQ codes (+-1; else BSQ +-1/sqrt(d)), bit 1 = spatial patchify (8B model)
    6       1     d, bits per token (1..64)
    7       1     K, number of scales (1..255)
    8       2     patch size (pixels per latent token)
    10      4     B, number of images
    14      4     image height H (pixels, before padding)
    18      4     image width W
    22      4*K   schedule: K pairs (uint16 h_k, uint16 w_k)
    ...     4     M, length of the tokenizer record
    ...     M     tokenizer record: UTF-8 JSON {"config": TokenizerConfig.to_dict(), "weights": fingerprint}; either key
                  may be absent (codes not made by a tokenizer)
    ...     8     payload length in bytes = ceil(B * sum_k h_k w_k d / 8)
    ...     n     payload: for image b, for scale k, for token (row-major), bits j = 0..d-1 (latent channel j);
                  packed MSB-first into bytes, one stream for the whole file, zero-padded to a byte
    ...     4     CRC-32 (zlib) of every preceding byte

Version 1 is the same without the M and tokenizer-record fields; it is still read (its codes carry no fingerprint, so
decoding them cannot check the weights). The tokenizer record lets :meth:`BSQTokenizer.decode` refuse codes written by
other weights (see :meth:`BSQTokenizer.check_codes`).

Decoding checks the magic, the version, every size, and the checksum, so a truncated or corrupted file raises a
``ValueError`` that says what is wrong instead of producing garbage.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TokenizerConfig
from .multiscale import patchify_bits, summed_codes_from_bits, transformer_inputs
from .quantizers import bits_to_indices

__all__ = ["MAGIC", "VERSION", "EncodedImages", "load_codes", "pack_codes", "save_codes", "unpack_codes"]

logger = logging.getLogger(__name__)

MAGIC = b"BSQB"
VERSION = 2
_READABLE = (1, 2)
_FIXED = struct.Struct("<4sBBBBHIII")
_MAX_RECORD = 1 << 20  # a tokenizer config is well under 1 KiB


_FLAG_LFQ, _FLAG_PATCHIFY = 1, 2


@dataclass(kw_only=True)
class EncodedImages:
    """The output of :meth:`BSQTokenizer.encode`: bits of every scale plus what is needed to decode them.

    Attributes:
        bits: per scale k, uint8 ``(B, h_k, w_k, d)``; bit j of a token is latent channel j (1 = positive code).
        schedule: the latent grids ``((h_1, w_1), ..., (h_K, w_K))``; the last is the full latent size.
        image_size: ``(H, W)`` of the original images (before padding to the stride).
        patch_size: pixels per latent token (the encoder stride).
        code_scale: magnitude of one code entry (1/sqrt(d) for BSQ, 1 for LFQ).
        spatial_patchify: the transformer groups 2x2 latent tokens (8B model); see :meth:`transformer_bits`.
        tokenizer_config: the config of the tokenizer that encoded them (``None`` if unknown, e.g. an old file).
        weights_fingerprint: :meth:`BSQTokenizer.weights_fingerprint` of the weights that encoded them (or ``None``);
            :meth:`BSQTokenizer.decode` refuses codes whose fingerprint is not its own.
    """

    bits: list[torch.Tensor]
    schedule: tuple[tuple[int, int], ...]
    image_size: tuple[int, int]
    patch_size: int
    code_scale: float
    spatial_patchify: bool = False
    tokenizer_config: TokenizerConfig | None = None
    weights_fingerprint: str | None = None

    def __post_init__(self) -> None:
        self.schedule = tuple((int(h), int(w)) for h, w in self.schedule)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if len(self.bits) != len(self.schedule):
            raise ValueError(f"{len(self.bits)} bit maps for {len(self.schedule)} scales")
        for k, (b, hw) in enumerate(zip(self.bits, self.schedule)):
            if (
                b.ndim != 4
                or tuple(b.shape[1:3]) != hw
                or b.shape[0] != self.bits[0].shape[0]
                or b.shape[3] != self.bits[0].shape[3]
            ):
                raise ValueError(
                    f"bits of scale {k + 1} have shape {tuple(b.shape)}, expected (B, {hw[0]}, {hw[1]}, d)"
                )

    @property
    def batch_size(self) -> int:
        return self.bits[0].shape[0]

    @property
    def codebook_dim(self) -> int:
        return self.bits[0].shape[-1]

    @property
    def num_scales(self) -> int:
        return len(self.schedule)

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.schedule[-1]

    @property
    def num_bits(self) -> int:
        """Bits per image over all scales: ``sum_k h_k w_k d``."""
        return sum(h * w for h, w in self.schedule) * self.codebook_dim

    @property
    def bpp(self) -> float:
        """Raw bits per pixel of the original image size."""
        return self.num_bits / (self.image_size[0] * self.image_size[1])

    def summed_codes(self, upto_scale: int | None = None) -> torch.Tensor:
        """Sum of the upsampled codes of scales 1..``upto_scale``: float32 ``(B, d, H_lat, W_lat)``."""
        return summed_codes_from_bits(self.bits, self.schedule, upto_scale=upto_scale, scale=self.code_scale)

    @property
    def transformer_schedule(self) -> tuple[tuple[int, int], ...]:
        """Token grids seen by the AR model (the latent schedule halved with spatial patchify)."""
        if self.spatial_patchify:
            return tuple((h // 2, w // 2) for h, w in self.schedule)
        return self.schedule

    def transformer_inputs(self) -> torch.Tensor:
        """Teacher-forcing inputs of the AR model for scales 2..K: float32 ``(B, L - h_1 w_1, token_dim)``."""
        return transformer_inputs(self.bits, self.schedule, scale=self.code_scale, patchify=self.spatial_patchify)

    def transformer_bits(self) -> list[torch.Tensor]:
        """Per-scale label bits on the transformer grid: ``(B, h_k, w_k, token_dim)`` uint8 (2x2-grouped with patchify)."""
        return [patchify_bits(b) for b in self.bits] if self.spatial_patchify else list(self.bits)

    def transformer_labels(self) -> torch.Tensor:
        """All label bits as one sequence ``(B, L, token_dim)`` uint8, scales in order, tokens row-major."""
        return torch.cat([b.flatten(1, 2) for b in self.transformer_bits()], dim=1)

    def to_indices(self) -> list[torch.Tensor]:
        """Per scale int64 ``(B, h_k, w_k)`` token indices, MSB first (bit j has weight 2^(d-1-j)); needs d <= 63."""
        return [bits_to_indices(b) for b in self.bits]

    def select(self, index: int | slice | Sequence[int]) -> EncodedImages:
        """The images ``index`` of the batch as a new :class:`EncodedImages`."""
        if isinstance(index, int):
            index = [index]
        idx = index if isinstance(index, slice) else torch.as_tensor(list(index), dtype=torch.long)
        return EncodedImages(
            bits=[b[idx] for b in self.bits],
            schedule=self.schedule,
            image_size=self.image_size,
            patch_size=self.patch_size,
            code_scale=self.code_scale,
            spatial_patchify=self.spatial_patchify,
            tokenizer_config=self.tokenizer_config,
            weights_fingerprint=self.weights_fingerprint,
        )

    def pack(self) -> bytes:
        """Bits packed 8 per byte with a small self-describing header (see :mod:`bsq_tokenizer.bitfile`)."""
        return pack_codes(self)

    @classmethod
    def unpack(cls, data: bytes) -> EncodedImages:
        """Inverse of :meth:`pack`; ``ValueError`` for truncated or corrupt data."""
        return unpack_codes(data)

    def to(self, device: str | torch.device) -> EncodedImages:
        return EncodedImages(
            bits=[b.to(device) for b in self.bits],
            schedule=self.schedule,
            image_size=self.image_size,
            patch_size=self.patch_size,
            code_scale=self.code_scale,
            spatial_patchify=self.spatial_patchify,
            tokenizer_config=self.tokenizer_config,
            weights_fingerprint=self.weights_fingerprint,
        )


def _flags(codes: EncodedImages) -> int:
    d = codes.codebook_dim
    if abs(codes.code_scale - 1.0 / d**0.5) < 1e-9:
        flags = 0
    elif abs(codes.code_scale - 1.0) < 1e-9:
        flags = _FLAG_LFQ
    else:
        raise ValueError(f"code scale {codes.code_scale} is neither BSQ (1/sqrt(d)) nor LFQ (1)")
    return flags | (_FLAG_PATCHIFY if codes.spatial_patchify else 0)


def _tokenizer_record(codes: EncodedImages) -> bytes:
    record: dict[str, Any] = {}
    if codes.tokenizer_config is not None:
        record["config"] = codes.tokenizer_config.to_dict()
    if codes.weights_fingerprint is not None:
        record["weights"] = codes.weights_fingerprint
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _read_record(data: bytes) -> tuple[TokenizerConfig | None, str | None]:
    try:
        record = json.loads(data.decode("utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        config = TokenizerConfig.from_dict(record["config"]) if "config" in record else None
        weights = record.get("weights")
        if weights is not None and not isinstance(weights, str):
            raise ValueError(f"weights fingerprint {weights!r} is not a string")
    except (UnicodeDecodeError, ValueError, TypeError) as err:
        raise ValueError(f"corrupt packed-bits tokenizer record: {err}") from None
    return config, weights


def pack_codes(codes: EncodedImages) -> bytes:
    """Serialise :class:`EncodedImages` to bytes (see the module doc for the layout)."""
    d, k = codes.codebook_dim, codes.num_scales
    if not 1 <= d <= 64 or not 1 <= k <= 255:
        raise ValueError(f"cannot pack d={d} bits per token with {k} scales (limits 64 and 255)")
    if any(h > 65535 or w > 65535 for h, w in codes.schedule):
        raise ValueError("scale sizes above 65535 tokens per side cannot be packed")
    batch = codes.batch_size
    header = _FIXED.pack(MAGIC, VERSION, _flags(codes), d, k, codes.patch_size, batch, *codes.image_size)
    header += b"".join(struct.pack("<HH", h, w) for h, w in codes.schedule)
    record = _tokenizer_record(codes)
    header += struct.pack("<I", len(record)) + record
    per_image = [b.reshape(batch, -1).to("cpu", torch.uint8).numpy() for b in codes.bits]
    stream = np.concatenate(per_image, axis=1).reshape(-1)
    if stream.size and stream.max() > 1:
        raise ValueError("bits must be 0 or 1")
    payload = np.packbits(stream).tobytes()
    body = header + struct.pack("<Q", len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def unpack_codes(data: bytes) -> EncodedImages:
    """Parse bytes written by :func:`pack_codes`; ``ValueError`` on a truncated, corrupt or foreign file."""
    if len(data) < _FIXED.size:
        raise ValueError(
            f"not a packed-bits file: {len(data)} bytes is shorter than the {_FIXED.size}-byte header (truncated?)"
        )
    magic, version, flags, d, k, patch, batch, height, width = _FIXED.unpack_from(data, 0)
    if magic != MAGIC:
        raise ValueError(f"not a packed-bits file (magic {magic!r}, expected {MAGIC!r})")
    if version not in _READABLE:
        raise ValueError(
            f"packed-bits format version {version} is not supported (this reader knows versions {list(_READABLE)})"
        )
    if flags & ~(_FLAG_LFQ | _FLAG_PATCHIFY) or not 1 <= d <= 64 or k < 1:
        raise ValueError(f"corrupt packed-bits header (flags {flags:#x}, d={d}, scales={k})")
    offset = _FIXED.size
    need = offset + 4 * k + (4 if version >= 2 else 0) + 8
    if len(data) < need:
        raise ValueError(f"packed-bits file is truncated: header needs {need} bytes, file has {len(data)}")
    schedule = [struct.unpack_from("<HH", data, offset + 4 * i) for i in range(k)]
    offset += 4 * k
    config, fingerprint = None, None
    if version >= 2:
        (record_len,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if record_len > _MAX_RECORD:
            raise ValueError(f"corrupt packed-bits header: tokenizer record of {record_len} bytes")
        if len(data) < offset + record_len + 8:
            raise ValueError(
                f"packed-bits file is truncated: header needs {offset + record_len + 8} bytes, file has {len(data)}"
            )
        record = data[offset : offset + record_len]
        offset += record_len
    (payload_len,) = struct.unpack_from("<Q", data, offset)
    offset += 8
    tokens = sum(h * w for h, w in schedule)
    total_bits = batch * tokens * d
    if payload_len != (total_bits + 7) // 8:
        raise ValueError(f"corrupt packed-bits header: payload length {payload_len} does not match {total_bits} bits")
    end = offset + payload_len
    if len(data) < end + 4:
        raise ValueError(f"packed-bits file is truncated: expected {end + 4} bytes, found {len(data)}")
    if len(data) > end + 4:
        raise ValueError(f"packed-bits file has {len(data) - end - 4} unexpected trailing bytes")
    (crc,) = struct.unpack_from("<I", data, end)
    if zlib.crc32(data[:end]) != crc:
        raise ValueError("packed-bits file is corrupt: checksum mismatch")
    if version >= 2:
        config, fingerprint = _read_record(record)
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8, count=payload_len, offset=offset), count=total_bits)
    per_image = stream.reshape(batch, tokens * d) if batch else np.zeros((0, tokens * d), np.uint8)
    bits, start = [], 0
    for h, w in schedule:
        n = h * w * d
        bits.append(torch.from_numpy(per_image[:, start : start + n].copy()).reshape(batch, h, w, d))
        start += n
    return EncodedImages(
        bits=bits,
        schedule=tuple(schedule),
        image_size=(height, width),
        patch_size=patch,
        code_scale=1.0 if flags & _FLAG_LFQ else 1.0 / d**0.5,
        spatial_patchify=bool(flags & _FLAG_PATCHIFY),
        tokenizer_config=config,
        weights_fingerprint=fingerprint,
    )


def save_codes(codes: EncodedImages, path: str | os.PathLike[str]) -> int:
    """Write packed codes to ``path`` atomically; returns the file size in bytes."""
    data = pack_codes(codes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


def load_codes(path: str | os.PathLike[str]) -> EncodedImages:
    """Read a file written by :func:`save_codes` (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"packed-bits file {path} not found")
    try:
        codes = unpack_codes(path.read_bytes())
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    if codes.weights_fingerprint is None:
        logger.warning(
            "%s records no tokenizer weights (an older .bsqb file, or codes not made by a tokenizer): decoding cannot "
            "check that the weights match",
            path,
        )
    return codes
