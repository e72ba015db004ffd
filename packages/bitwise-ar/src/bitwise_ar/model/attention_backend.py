"""Attention kernels for the mask-free self-attention paths: PyTorch SDPA (default) or flash-attn (optional).

``flash_attn`` is imported here and nowhere else, and only when a caller asks for it. It is not a dependency of
this package (it needs a CUDA toolchain matching the installed torch); install it next to the ``flash`` extra:

    pip install 'bitwise-ar[flash]' && pip install flash-attn --no-build-isolation

Backends (``InfinityTransformer.set_attention_backend``):

* ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` (PyTorch picks its own fused kernel).
* ``"flash"``: ``flash_attn.flash_attn_func``; an ImportError naming the install command if flash-attn is missing or
  broken, and a ValueError for inputs it cannot take (CPU tensors, float32, head width not a multiple of 8 or > 256).
* ``"auto"``: flash-attn when it imports and CUDA is available, else SDPA (one log line says why); calls with inputs
  flash-attn cannot take (e.g. float32 blocks) also use SDPA.

Only the paths whose queries see every key they are given use the kernel: the KV cache at inference, the
recompute-prefix mode and ``attention="chunked"`` training. The masked one-call training path keeps SDPA (flash-attn
takes no arbitrary masks). Cross-attention to the text at inference uses flash-attn's varlen kernel on the packed
(unpadded) text keys when the flash backend is active and the blocks are fp16/bf16 on CUDA (:class:`PackedTextKV`,
packed once per image), and SDPA with a key mask otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

AttentionBackend = Literal["sdpa", "flash", "auto"]
ATTENTION_BACKENDS: tuple[str, ...] = ("sdpa", "flash", "auto")
FLASH_INSTALL = "pip install 'bitwise-ar[flash]' && pip install flash-attn --no-build-isolation"
FLASH_DTYPES = (torch.float16, torch.bfloat16)

AttentionKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
"""softmax(q k^T * scale) v without a mask; q (B, H, n, hd), k and v (B, H, m, hd) -> (B, H, n, hd)."""


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """The default kernel: PyTorch's scaled_dot_product_attention."""
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def import_flash_attn(name: str = "flash_attn_func") -> Callable[..., torch.Tensor]:
    """``flash_attn.<name>`` (``flash_attn_func`` or ``flash_attn_varlen_func``), or an ImportError naming the
    install command.

    A broken build fails at import with ImportError (undefined symbol), OSError (missing CUDA library) or
    RuntimeError (CUDA/torch version mismatch); all of them become the same ImportError, with the cause chained.
    """
    try:
        import flash_attn

        fn = getattr(flash_attn, name)
    except Exception as err:
        missing = isinstance(err, ModuleNotFoundError) and err.name == "flash_attn"
        reason = "is not installed" if missing else f"failed to import ({type(err).__name__}: {err})"
        raise ImportError(
            f"attention_backend='flash' needs flash-attn, which {reason}: {FLASH_INSTALL} "
            "(or use attention_backend='sdpa' / 'auto')"
        ) from err
    return fn


def flash_ineligibility(q: torch.Tensor) -> str | None:
    """Why flash-attn cannot run on these queries (``None`` when it can)."""
    if q.device.type != "cuda":
        return f"tensors are on {q.device.type}, flash-attn needs CUDA"
    if q.dtype not in FLASH_DTYPES:
        return f"dtype is {q.dtype}, flash-attn needs float16 or bfloat16 (cast the blocks, e.g. low_memory=True)"
    head_dim = q.shape[-1]
    if head_dim % 8 or head_dim > 256:
        return f"head width {head_dim} is not a multiple of 8 up to 256"
    return None


def flash_call(flash_fn: Callable[..., Any], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Run ``flash_fn`` (flash_attn_func's signature, tensors (B, n, H, hd)) on our (B, H, n, hd) layout."""
    out = flash_fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale, causal=False)
    return out.transpose(1, 2)


@dataclass
class PackedTextKV:
    """One block's text keys/values in flash-attn's varlen layout: the valid rows of every prompt concatenated,
    (N, H, hd) each (N may include unused padding rows at the end), with int32 offsets ``cu_seqlens_k`` (B + 1,)."""

    k_NHc: torch.Tensor
    v_NHc: torch.Tensor
    cu_seqlens_k: torch.Tensor
    max_seqlen_k: int
    varlen_fn: Callable[..., torch.Tensor]


def pack_text_kv(
    k_BHTc: torch.Tensor,
    v_BHTc: torch.Tensor,
    lengths: Sequence[int],
    varlen_fn: Callable[..., torch.Tensor],
    cu_seqlens_k: torch.Tensor | None = None,
) -> PackedTextKV:
    """Padded (B, H, T, hd) keys/values of prompts with the given token counts -> :class:`PackedTextKV` (no host
    sync: the lengths are Python ints)."""
    k = torch.cat([k_BHTc[b, :, :n].transpose(0, 1) for b, n in enumerate(lengths)])
    v = torch.cat([v_BHTc[b, :, :n].transpose(0, 1) for b, n in enumerate(lengths)])
    if cu_seqlens_k is None:
        offsets = [0]
        for n in lengths:
            offsets.append(offsets[-1] + int(n))
        cu_seqlens_k = torch.tensor(offsets, dtype=torch.int32, device=k.device)
    return PackedTextKV(k.contiguous(), v.contiguous(), cu_seqlens_k, max(int(n) for n in lengths), varlen_fn)


def flash_varlen_cross_attention(q_BHLc: torch.Tensor, kv: PackedTextKV, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v of every image's queries against its own prompt's keys -> (B, H, L, hd)."""
    B, H, L, c = q_BHLc.shape
    q = q_BHLc.transpose(1, 2).reshape(B * L, H, c)
    cu_q = torch.arange(0, (B + 1) * L, L, dtype=torch.int32, device=q.device)
    out = kv.varlen_fn(q, kv.k_NHc, kv.v_NHc, cu_q, kv.cu_seqlens_k, L, kv.max_seqlen_k, softmax_scale=scale)
    return out.view(B, L, H, c).transpose(1, 2)


class FlashAttention:
    """The flash-attn kernel. ``strict``: ineligible inputs raise ValueError; otherwise they use SDPA (logged once).

    ``varlen_fn`` (``flash_attn_varlen_func``) serves the text cross-attention (:func:`flash_varlen_cross_attention`).
    """

    def __init__(
        self, flash_fn: Callable[..., Any], *, strict: bool, varlen_fn: Callable[..., Any] | None = None
    ) -> None:
        self.flash_fn = flash_fn
        self.varlen_fn = varlen_fn
        self.strict = strict
        self._fallback_logged = False

    def cross_attention_ready(self, k: torch.Tensor) -> bool:
        """Whether text keys like ``k`` go through the varlen kernel (raises like ``__call__`` when strict)."""
        if self.varlen_fn is None:
            return False
        reason = flash_ineligibility(k)
        if reason is None:
            return True
        if self.strict:
            raise ValueError(f"attention_backend='flash' cannot run here: {reason}; or use attention_backend='auto'")
        if not self._fallback_logged:
            logger.info("attention_backend='auto': using SDPA for these calls (%s)", reason)
            self._fallback_logged = True
        return False

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        reason = flash_ineligibility(q)
        if reason is None:
            return flash_call(self.flash_fn, q, k, v, scale)
        if self.strict:
            raise ValueError(f"attention_backend='flash' cannot run here: {reason}; or use attention_backend='auto'")
        if not self._fallback_logged:
            logger.info("attention_backend='auto': using SDPA for these calls (%s)", reason)
            self._fallback_logged = True
        return sdpa_attention(q, k, v, scale)

    def __repr__(self) -> str:
        return f"FlashAttention(strict={self.strict})"


def resolve_attention_backend(backend: str) -> tuple[str, AttentionKernel]:
    """``(effective backend name, kernel)`` for "sdpa", "flash" or "auto" (see the module docstring)."""
    if backend == "sdpa":
        return "sdpa", sdpa_attention
    if backend == "flash":
        return "flash", FlashAttention(import_flash_attn(), strict=True, varlen_fn=_optional_varlen())
    if backend == "auto":
        try:
            flash_fn = import_flash_attn()
        except ImportError as err:
            logger.info("attention_backend='auto': flash-attn unavailable, using SDPA (%s)", err.__cause__ or err)
            return "sdpa", sdpa_attention
        if not torch.cuda.is_available():
            logger.info("attention_backend='auto': CUDA is not available, using SDPA")
            return "sdpa", sdpa_attention
        return "flash", FlashAttention(flash_fn, strict=False, varlen_fn=_optional_varlen())
    raise ValueError(f"attention_backend must be one of {list(ATTENTION_BACKENDS)}, got {backend!r}")


def _optional_varlen() -> Callable[..., Any] | None:
    """flash-attn's varlen function, or None (logged) for a build without it (cross-attention then uses SDPA)."""
    try:
        return import_flash_attn("flash_attn_varlen_func")
    except ImportError as err:
        logger.info("flash-attn has no usable flash_attn_varlen_func; cross-attention uses SDPA (%s)", err)
        return None
