"""One scale of KV-cached sampling as a static-shape function, run eagerly or compiled once per scale.

Every shape in :func:`scale_step` is fixed by the schedule, the batch and the (bucketed) text length: the KV cache is
preallocated for the whole sequence and written at the scale's fixed offsets, the random numbers are drawn before the
step (so the eager and the compiled step see the same draws) and nothing is read back to the host. Compiled
(:class:`CompiledSteps`), each scale is one ``torch.compile`` graph in which inductor fuses the AdaLN / RoPE / norm /
activation elementwise work; on CUDA the graphs are replayed as CUDA graphs (mode ``"reduce-overhead"``). Dynamo keeps
the graphs for the process, so a (schedule, batch) pays its compile cost once.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bitwise_ar.layout import ScaleLayout
from bitwise_ar.model import InfinityTransformer, KVCache
from bitwise_ar.model.attention_backend import PackedTextKV
from bitwise_ar.model.head import bit_logit_pairs
from bitwise_ar.model.transformer import Condition

logger = logging.getLogger(__name__)

TEXT_BUCKET = 64
"""The compiled path pads the text keys to a multiple of this many tokens (masked), so that prompts of similar
lengths share one graph instead of compiling per length."""
MAX_KEPT_BUFFERS = 4
"""KV-cache sets (one per schedule, batch and dtype) a model keeps for its compiled steps; the oldest is dropped."""


@dataclass(frozen=True)
class ScalePlan:
    """The static facts of one scale step (all Python values, so a compiled graph specialises on them)."""

    index: int
    start: int
    end: int
    size: tuple[int, int]
    batch: int
    rows: int
    guided: bool  # CFG on logits at this scale
    feature_layer: int | None  # CFG on the hidden states after this block (None = off)
    sample: bool  # draw bits (False: the bits are given)
    top_k: int
    top_p: float
    patchify: bool
    code_scale: float
    final_latent: tuple[int, int]
    next_size: tuple[int, int] | None  # None at the last scale


def bits_from_logits(logits_BLV: torch.Tensor, uniform_BLd: torch.Tensor | None, top_k: int, top_p: float) -> torch.Tensor:
    """Bits (B, L, d) uint8 from bitwise logits and uniform draws in [0, 1) (official top-k / top-p semantics).

    ``top_k == 1`` is greedy (no draws needed); ``top_p`` makes a bit deterministic when its less likely value has
    probability <= 1 - top_p; otherwise bit = 1 iff u < sigmoid(logit_1 - logit_0).
    """
    pairs = bit_logit_pairs(logits_BLV.float())
    diff = pairs[..., 1] - pairs[..., 0]  # log-odds of bit = 1
    greedy = diff > 0
    if top_k == 1:
        return greedy.to(torch.uint8)
    if uniform_BLd is None:
        raise ValueError("sampling bits needs uniform draws unless top_k == 1 (greedy)")
    p_one = torch.sigmoid(diff)
    if 0.0 < top_p < 1.0:
        p_low = torch.sigmoid(-diff.abs())
        p_one = torch.where(p_low <= 1.0 - top_p, greedy.float(), p_one)
    return (uniform_BLd < p_one).to(torch.uint8)


def unpatchify_bits(bits_Bhwd: torch.Tensor) -> torch.Tensor:
    """(B, h, w, 4d) -> (B, 2h, 2w, d) with pixel_shuffle channel order (official 8B layout)."""
    return F.pixel_shuffle(bits_Bhwd.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)


def bits_to_codes(bits_Bhwd: torch.Tensor, scale: float) -> torch.Tensor:
    """{0, 1} bits (B, h, w, d) -> codes (B, d, h, w) = (2 b - 1) * scale."""
    return ((bits_Bhwd.float() * 2.0 - 1.0) * scale).permute(0, 3, 1, 2)


def next_inputs(summed_BdHW: torch.Tensor, size: tuple[int, int], patchify: bool) -> torch.Tensor:
    """Bilinear downsample of the summed codes to the next token grid, flattened row-major to (B, h*w, d)."""
    if patchify:
        x = F.interpolate(summed_BdHW, size=(2 * size[0], 2 * size[1]), mode="bilinear", align_corners=False)
        x = F.pixel_unshuffle(x, 2)
    else:
        x = F.interpolate(summed_BdHW, size=size, mode="bilinear", align_corners=False)
    return x.flatten(2).transpose(1, 2)


def feature_hook(plan: ScalePlan, cfg: float) -> Callable[[int, torch.Tensor], torch.Tensor] | None:
    """CFG on features: after block ``plan.feature_layer`` both halves become cfg * cond + (1 - cfg) * uncond."""
    if plan.feature_layer is None:
        return None
    B = plan.batch

    def hook(i: int, hid: torch.Tensor) -> torch.Tensor:
        if i != plan.feature_layer:
            return hid
        mixed = cfg * hid[:B] + (1 - cfg) * hid[B:]
        return torch.cat((mixed, mixed))

    return hook


def scale_logits(
    model: InfinityTransformer, plan: ScalePlan, hid_BnC: torch.Tensor, cond: Condition, cfg: float, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(post-tau post-CFG logits (B, n, V), raw head output (rows, n, V)) of one scale's hidden states."""
    B = plan.batch
    if plan.guided:
        head = model.logits(hid_BnC, cond.cond_BD)
        scaled = head / tau
        return cfg * scaled[:B] + (1 - cfg) * scaled[B:], head
    head = model.logits(hid_BnC[:B], cond.cond_BD[:B])
    return head / tau, head


def accumulate(
    plan: ScalePlan, bits_BLd: torch.Tensor, summed_BdHW: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(bits (B, h, w, d), summed codes after this scale, next scale's inputs or None at the last scale)."""
    h, w = plan.size
    bits_Bhwd = bits_BLd.view(plan.batch, h, w, -1)
    codes = bits_to_codes(unpatchify_bits(bits_Bhwd) if plan.patchify else bits_Bhwd, plan.code_scale)
    if plan.next_size is None:
        return bits_Bhwd, summed_BdHW + codes, None
    summed = summed_BdHW + F.interpolate(codes, size=plan.final_latent, mode="bilinear", align_corners=False)
    return bits_Bhwd, summed, next_inputs(summed, plan.next_size, plan.patchify)


def keep_given(bits_BLd: torch.Tensor, given_BLd: torch.Tensor | None, keep_BL1: torch.Tensor | None) -> torch.Tensor:
    """Editing: the given bits where ``keep_BL1`` is True, ``bits_BLd`` elsewhere (unchanged without a keep-mask)."""
    if keep_BL1 is None:
        return bits_BLd
    return torch.where(keep_BL1, given_BLd, bits_BLd)


def scale_step(
    model: InfinityTransformer,
    plan: ScalePlan,
    inputs_Bnd: torch.Tensor | None,
    cond: Condition,
    rope: tuple[torch.Tensor, torch.Tensor],
    caches: list[KVCache],
    cfg: float,
    tau: float,
    uniform_BLd: torch.Tensor | None,
    given_BLd: torch.Tensor | None,
    summed_BdHW: torch.Tensor,
    keep_BL1: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """One KV-cached scale: (bits (B, h, w, d), summed codes, next inputs, logits, head logits).

    ``caches`` must hold exactly ``plan.start`` tokens; ``given_BLd`` replaces the sampled bits when ``plan.sample``
    is False. ``keep_BL1`` (bool, editing): where True the token takes ``given_BLd``'s bits instead of the sampled
    ones, before the codes are summed (so the next scale sees the mixed state). Static shapes only (the keep-mask
    is a tensor input, not a shape): safe to run under ``torch.compile(dynamic=False)``.
    """
    B, rows = plan.batch, plan.rows
    x = model.embed_scale(plan.index, None if inputs_Bnd is None else inputs_Bnd.repeat(rows // B, 1, 1), cond)
    cos, sin = rope
    hook = feature_hook(plan, cfg)
    hid = model.run_blocks(x, cond, (cos[plan.start : plan.end], sin[plan.start : plan.end]), caches, hook)
    logits, head = scale_logits(model, plan, hid, cond, cfg, tau)
    bits = bits_from_logits(logits, uniform_BLd, plan.top_k, plan.top_p) if plan.sample else given_BLd
    bits = keep_given(bits, given_BLd, keep_BL1)
    bits_Bhwd, summed, inputs = accumulate(plan, bits, summed_BdHW)
    return bits_Bhwd, summed, inputs, logits, head


def pad_text_keys(cond: Condition, multiple: int = TEXT_BUCKET) -> None:
    """Pad the cached text keys/values and the key mask to a multiple of ``multiple`` tokens (masked out, so the
    attention is unchanged up to float rounding of the longer reduction)."""
    if cond.text.kv is None:
        return
    if cond.text.kv and isinstance(cond.text.kv[0], PackedTextKV):  # flash varlen: pad rows no offset points to
        rows = cond.text.kv[0].k_NHc.shape[0]
        extra, longest = -rows % (multiple * len(cond.text.lengths)), -(-cond.text.kv[0].max_seqlen_k // multiple)
        cond.text.kv = [
            PackedTextKV(F.pad(p.k_NHc, (0, 0, 0, 0, 0, extra)), F.pad(p.v_NHc, (0, 0, 0, 0, 0, extra)),
                         p.cu_seqlens_k, longest * multiple, p.varlen_fn)
            for p in cond.text.kv
        ]
        return
    T = cond.text.key_mask_BT.shape[1]
    pad = -T % multiple
    if pad == 0:
        return
    cond.text.kv = [(F.pad(k, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))) for k, v in cond.text.kv]
    cond.text.key_mask_BT = F.pad(cond.text.key_mask_BT, (0, pad), value=False)


def compile_unavailable_reason(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here (None when it should)."""
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile (dynamo) does not support this Python / platform"
    if device.type == "cpu" and not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return "no C++ compiler on PATH (inductor needs one for CPU kernels)"
    return None


class CompiledSteps:
    """The compiled :func:`scale_step` of one model plus its persistent KV caches (static addresses for CUDA graphs).

    A failed compilation is logged once and the steps run eagerly from then on (same results).
    """

    RECOMPILE_LIMIT = 512  # one graph per (scale, batch, text bucket, dtype); dynamo's default (8) is far too low

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda_graphs = device.type == "cuda"
        mode = "reduce-overhead" if self.cuda_graphs else None
        self._step: Callable[..., Any] = torch.compile(scale_step, dynamic=False, mode=mode)
        self._buffers: dict[tuple, list[KVCache]] = {}
        self.failure: str | None = None

    def caches(self, model: InfinityTransformer, layout: ScaleLayout, rows: int, dtype: torch.dtype) -> list[KVCache]:
        """The KV caches for (schedule, rows, dtype), allocated once and reset for every image."""
        key = (layout.schedule, rows, dtype, id(model.attention_kernel))
        caches = self._buffers.pop(key, None)
        if caches is None:
            # normal (not inference-mode) tensors, so later calls under plain no_grad may write them too
            with torch.inference_mode(False):
                caches = self._allocate(model, layout, rows, dtype)
            if self.cuda_graphs:
                for cache in caches:
                    torch._dynamo.mark_static_address(cache.k)
                    torch._dynamo.mark_static_address(cache.v)
        while len(self._buffers) >= MAX_KEPT_BUFFERS:
            self._buffers.pop(next(iter(self._buffers)))
        self._buffers[key] = caches  # most recently used last
        for cache in caches:
            cache.reset()
        return caches

    def _allocate(self, model: InfinityTransformer, layout: ScaleLayout, rows: int, dtype: torch.dtype) -> list[KVCache]:
        config = model.config
        return [
            KVCache(rows, config.num_heads, layout.total_tokens, config.head_dim, dtype, self.device,
                    model.attention_kernel)
            for _ in model.blocks
        ]

    def begin_image(self) -> None:
        if self.cuda_graphs and self.failure is None:
            torch.compiler.cudagraph_mark_step_begin()

    def __call__(self, *args: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        if self.failure is None:
            try:
                with torch._dynamo.config.patch(recompile_limit=self.RECOMPILE_LIMIT,
                                                accumulated_recompile_limit=self.RECOMPILE_LIMIT * 4):
                    out = self._step(*args)
            except Exception as err:  # compilation is an optimisation: never let it cost the image
                for cache in args[5]:  # a graph break may have run part of the step: rewind the caches
                    cache.length = args[1].start
                self.failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                logger.warning("compiled sampling failed, running eagerly from now on (%s)", self.failure)
                self.cuda_graphs = False
            else:
                if self.cuda_graphs:  # CUDA-graph outputs are overwritten by the next replay: keep copies
                    out = tuple(None if t is None else t.clone() for t in out)
                return out
        return scale_step(*args)


def compiled_steps(model: InfinityTransformer, device: torch.device) -> CompiledSteps:
    """The model's :class:`CompiledSteps` for ``device``, created on first use and kept on the model."""
    store = model.__dict__.setdefault("_compiled_steps", {})
    key = str(device)
    if key not in store:
        store[key] = CompiledSteps(device)
    return store[key]


def code_magnitude(d_tok: int, code_scale: float | None) -> float:
    """BSQ code magnitude: 1/sqrt(d) unless the tokenizer says otherwise."""
    return 1.0 / math.sqrt(d_tok) if code_scale is None else float(code_scale)
