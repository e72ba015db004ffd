"""Attention kernels for the mask-free self-attention paths: PyTorch SDPA (default) or flash-attn (optional).

``flash_attn`` is imported here and nowhere else, and only when a caller asks for it. It is the ``flash`` extra,
locked in the workspace and built on the CUDA node against the locked torch (docs/install.md):

    uv sync --locked --extra flash                   # in the workspace
    pip install flash-attn --no-build-isolation      # elsewhere, next to an installed torch

Backends (``InfinityTransformer.set_attention_backend``):

* ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` (PyTorch picks its own fused kernel).
* ``"flash"``: ``flash_attn.flash_attn_func``; an ImportError naming the install command if flash-attn is missing or
  broken, and a ValueError for inputs it cannot take (CPU tensors, float32, head width not a multiple of 8 or > 256).
* ``"auto"``: flash-attn when it imports and CUDA is available, else SDPA (one log line says why); calls with inputs
  flash-attn cannot take (e.g. float32 blocks) also use SDPA.

Only the paths whose queries see every key they are given use the kernel: the KV cache at inference, the
recompute-prefix mode and ``attention="chunked"`` training. The masked one-call training path and the cross-attention
to padded text keep SDPA (flash-attn takes no arbitrary masks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

AttentionBackend = Literal["sdpa", "flash", "auto"]
ATTENTION_BACKENDS: tuple[str, ...] = ("sdpa", "flash", "auto")
FLASH_INSTALL = (
    "on a CUDA node, `uv sync --locked --extra flash` in the workspace, or "
    "`pip install flash-attn --no-build-isolation` next to an installed torch"
)
FLASH_DTYPES = (torch.float16, torch.bfloat16)

AttentionKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
"""softmax(q k^T * scale) v without a mask; q (B, H, n, hd), k and v (B, H, m, hd) -> (B, H, n, hd)."""


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """The default kernel: PyTorch's scaled_dot_product_attention."""
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def import_flash_attn() -> Callable[..., torch.Tensor]:
    """``flash_attn.flash_attn_func``, or an ImportError naming the install command.

    A broken build fails at import with ImportError (undefined symbol), OSError (missing CUDA library) or
    RuntimeError (CUDA/torch version mismatch); all of them become the same ImportError, with the cause chained.
    """
    try:
        from flash_attn import flash_attn_func
    except Exception as err:
        missing = isinstance(err, ModuleNotFoundError) and err.name == "flash_attn"
        reason = "is not installed" if missing else f"failed to import ({type(err).__name__}: {err})"
        raise ImportError(
            f"attention_backend='flash' needs flash-attn, which {reason}: {FLASH_INSTALL} "
            "(or use attention_backend='sdpa' / 'auto')"
        ) from err
    return flash_attn_func


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


class FlashAttention:
    """The flash-attn kernel. ``strict``: ineligible inputs raise ValueError; otherwise they use SDPA (logged once)."""

    def __init__(self, flash_fn: Callable[..., Any], *, strict: bool) -> None:
        self.flash_fn = flash_fn
        self.strict = strict
        self._fallback_logged = False

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
        return "flash", FlashAttention(import_flash_attn(), strict=True)
    if backend == "auto":
        try:
            flash_fn = import_flash_attn()
        except ImportError as err:
            logger.info("attention_backend='auto': flash-attn unavailable, using SDPA (%s)", err.__cause__ or err)
            return "sdpa", sdpa_attention
        if not torch.cuda.is_available():
            logger.info("attention_backend='auto': CUDA is not available, using SDPA")
            return "sdpa", sdpa_attention
        return "flash", FlashAttention(flash_fn, strict=False)
    raise ValueError(f"attention_backend must be one of {list(ATTENTION_BACKENDS)}, got {backend!r}")
