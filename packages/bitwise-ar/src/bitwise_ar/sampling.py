"""Next-scale sampling: the KV-cached loop, classifier-free guidance, top-k/top-p on bits (reference §6).

:func:`iter_scales` walks the schedule and yields one :class:`ScaleStep` per scale (bits, logits, codes summed so
far), so callers can time scales or decode previews; :func:`sample` runs it to the end. With ``use_cache=False`` every
scale recomputes the whole prefix through the block-causal forward (a debug/benchmark mode with identical results).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from bsq_tokenizer.quantizers import indices_to_bits

from bitwise_ar.layout import ScaleLayout
from bitwise_ar.model import InfinityTransformer, KVCache, PackedText
from bitwise_ar.model.attention import ChunkedAttention
from bitwise_ar.scale_step import (
    CompiledSteps,
    ScalePlan,
    accumulate,
    bits_from_logits,
    code_magnitude,
    compile_unavailable_reason,
    compiled_steps,
    feature_hook,
    keep_given,
    pad_text_keys,
    scale_logits,
    scale_step,
)

logger = logging.getLogger(__name__)

FloatOrList = float | Sequence[float]
CompileMode = Literal["auto", "on", "off"]
COMPILE_MODES: tuple[str, ...] = ("auto", "on", "off")
Generators = torch.Generator | Sequence[torch.Generator] | None
"""One generator for the batch, or one per image (row i draws only from generator i, in the order it would alone)."""


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """Sampling settings. ``cfg`` and ``tau`` may be one value or one value per scale.

    * ``cfg``: guidance weight w; logits = w * cond + (1 - w) * uncond (1 = no guidance). Must be >= 0.
    * ``tau``: temperature dividing the head logits (> 0).
    * ``top_k``: keep the k most likely classes (0 = off). On bits (2 classes) only ``top_k = 1`` acts: greedy.
    * ``top_p``: nucleus sampling (0 = off). On a bit it makes the bit deterministic when the less likely value has
      probability <= 1 - top_p (official default 0.97).
    * ``cfg_insertion_layer``: 0 = CFG on logits (released setting); a negative n = CFG on the hidden states after
      block depth + n (the paper's "CFG on features" ablation), after which both halves carry the mixed states.
    * ``compile``: run each KV-cached scale as a compiled static-shape graph (:mod:`bitwise_ar.scale_step`; CUDA
      graphs on the GPU). "auto" (default) compiles on CUDA, where launch overhead dominates the small scales; on a CPU
      the one-off compile (seconds per scale) only pays for repeated sampling, so there it is "on" by request.
      "off" = eager. Bits equal the eager ones except where a bit's two logits are within float rounding. Where
      compilation is unavailable (no C++ compiler for CPU kernels, unsupported platform) sampling runs eagerly and
      logs why.
    """

    cfg: FloatOrList = 3.0
    tau: FloatOrList = 0.5
    top_k: int = 900
    top_p: float = 0.97
    cfg_insertion_layer: int = 0
    compile: CompileMode = "auto"

    def __post_init__(self) -> None:
        for name in ("cfg", "tau"):
            values = _as_list(getattr(self, name))
            if not values:
                raise ValueError(f"{name} list is empty; give one value or one per scale")
            for v in values:
                if not math.isfinite(v):
                    raise ValueError(f"{name} must be finite, got {v}")
            if name == "cfg" and min(values) < 0:
                raise ValueError(f"cfg must be >= 0 (1 = no guidance; typical 3-4), got {min(values)}")
            if name == "tau" and min(values) <= 0:
                raise ValueError(f"tau (temperature) must be > 0 (typical 0.5-1.0), got {min(values)}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1] (0 = off; official 0.97), got {self.top_p}")
        if self.cfg_insertion_layer > 0:
            raise ValueError("cfg_insertion_layer must be 0 (CFG on logits) or negative (CFG after block depth + n)")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {list(COMPILE_MODES)}, got {self.compile!r}")

    def per_scale(self, name: str, num_scales: int) -> list[float]:
        values = _as_list(getattr(self, name))
        if len(values) == 1:
            return values * num_scales
        if len(values) < num_scales:
            raise ValueError(f"{name} has {len(values)} values but the schedule has {num_scales} scales")
        return values[:num_scales]

    @property
    def uses_cfg(self) -> bool:
        return any(v != 1.0 for v in _as_list(self.cfg))

    def compiles_on(self, device: torch.device) -> bool:
        """Whether this setting asks for compiled steps on ``device`` ("auto": CUDA only)."""
        return self.compile == "on" or (self.compile == "auto" and device.type == "cuda")


def _as_list(value: FloatOrList) -> list[float]:
    if isinstance(value, int | float):
        return [float(value)]
    return [float(v) for v in value]


# ---------------------------------------------------------------------------------------------------- samplers
def check_generators(generator: Generators, batch_size: int) -> None:
    """Raise ValueError unless ``generator`` is None, one generator, or exactly ``batch_size`` generators."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    generators = list(generator)
    if len(generators) != batch_size or not all(isinstance(g, torch.Generator) for g in generators):
        raise ValueError(
            f"generator must be one torch.Generator or a list of {batch_size} (one per image), got "
            f"{len(generators)} item(s) of types {sorted({type(g).__name__ for g in generators})}"
        )


def _uniform(shape: Sequence[int], generator: Generators, device: torch.device) -> torch.Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        return torch.rand(tuple(shape), generator=generator, device=gen_device).to(device)
    # Per image: row i takes the (1, ...) draw it would take from its generator when sampled alone.
    rows = [torch.rand((1, *shape[1:]), generator=g, device=g.device).to(device) for g in generator]
    return torch.cat(rows)


def sample_bits(
    logits_BLV: torch.Tensor, *, top_k: int = 0, top_p: float = 0.0, generator: Generators = None
) -> torch.Tensor:
    """Sample every bit independently from bitwise logits (B, L, 2d) -> bits (B, L, d) uint8.

    Official semantics on each 2-way distribution: ``top_k == 1`` is greedy (bit = 1 iff its logit is larger);
    ``top_p`` removes the less likely value when its probability is <= 1 - top_p; then sample. ``generator`` may
    be a list with one generator per batch row.
    """
    if top_k == 1:
        return bits_from_logits(logits_BLV, None, top_k, top_p)
    uniform = _uniform((*logits_BLV.shape[:-1], logits_BLV.shape[-1] // 2), generator, logits_BLV.device)
    return bits_from_logits(logits_BLV, uniform, top_k, top_p)


def sample_indices(
    logits_NV: torch.Tensor, *, top_k: int = 0, top_p: float = 0.0, generator: Generators = None
) -> torch.Tensor:
    """Sample one class per row of (N, V) logits with the official top-k then top-p filtering -> (N,) int64.

    With a list of G generators the N rows are G equal consecutive groups (one image's tokens each), group g drawn
    from generator g.
    """
    logits = logits_NV.float().clone()
    V = logits.shape[-1]
    if top_k > 0:
        kth = logits.topk(min(top_k, V), dim=-1).values[..., -1:]
        logits.masked_fill_(logits < kth, -torch.inf)
    if 0.0 < top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1)
        remove_sorted = sorted_logits.softmax(-1).cumsum(-1) <= 1.0 - top_p
        remove_sorted[..., -1] = False
        logits.masked_fill_(remove_sorted.scatter(-1, order, remove_sorted), -torch.inf)
    probs = logits.softmax(-1)
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else probs.device
        return torch.multinomial(probs.to(gen_device), 1, generator=generator).squeeze(-1).to(probs.device)
    groups = probs.chunk(len(generator))
    if len(groups) != len(generator) or groups[0].shape[0] * len(generator) != probs.shape[0]:
        raise ValueError(f"{probs.shape[0]} rows cannot be split into {len(generator)} equal groups (one per image)")
    picks = [
        torch.multinomial(rows.to(g.device), 1, generator=g).squeeze(-1).to(probs.device)
        for rows, g in zip(groups, generator, strict=True)
    ]
    return torch.cat(picks)


# ---------------------------------------------------------------------------------------------------- the loop
@dataclass
class ScaleStep:
    """What one scale produced. ``summed_codes`` (B, d_tok, H_lat, W_lat) is the decoder input built so far."""

    index: int
    size: tuple[int, int]
    bits: torch.Tensor  # (B, h, w, d) uint8 in the transformer's token grid (d = 4 d_tok with spatial patchify)
    summed_codes: torch.Tensor
    logits: torch.Tensor | None = None  # (B, h*w, V) post-tau, post-CFG (what the sampler saw)
    head_logits: torch.Tensor | None = None  # (B or 2B, h*w, V) raw head output (cond rows, then uncond rows)


@dataclass
class SampleResult:
    """Bits of every scale, the summed codes for the decoder and (optionally) the logits per scale."""

    bits: list[torch.Tensor]
    summed_codes: torch.Tensor
    logits: list[torch.Tensor] = field(default_factory=list)
    head_logits: list[torch.Tensor] = field(default_factory=list)


def iter_scales(
    model: InfinityTransformer,
    text: PackedText,
    layout: ScaleLayout,
    settings: SamplingConfig | None = None,
    *,
    negative_text: PackedText | None = None,
    generator: Generators = None,
    code_scale: float | None = None,
    use_cache: bool = True,
    keep_logits: bool = False,
    prefix_bits: Sequence[torch.Tensor] | None = None,
    source_bits: Sequence[torch.Tensor] | None = None,
    keep_masks: Sequence[torch.Tensor] | None = None,
) -> Iterator[ScaleStep]:
    """Generate scale by scale (paper Sec. 3.1, reference §6), yielding a :class:`ScaleStep` after each scale.

    ``text`` holds B prompts; with CFG the model runs on [cond; uncond] (2B rows), uncond being ``negative_text``
    (B prompts) or the learned null text of the same lengths. ``code_scale`` is the tokenizer's code magnitude
    (default 1/sqrt(d_tok), BSQ). ``generator``: one for the batch, or a list of B (image i then equals image i
    sampled alone with generator i). ``prefix_bits``: bits ``(B, h_k, w_k, d)`` (uint8 / bool, in transformer
    token layout) for the first K scales, used instead of sampling them (the model still runs on them, so later
    scales condition on them): keep an image's coarse structure and resample its detail, or measure which scales a
    model gets wrong. ``source_bits`` and ``keep_masks`` (editing, one per scale, given together): bits ``(B, h_k,
    w_k, d)`` of a source image and bool masks ``(B, h_k, w_k)``; every scale is sampled (same random draws as
    plain generation), then each token whose mask is True takes the source's bits instead, before the codes are
    summed, so the residual state and the next scale's inputs are those of the mixed bits. The caller should run
    under ``torch.inference_mode()``.
    """
    settings = settings or SamplingConfig()
    config = model.config
    num_scales = layout.num_scales
    if layout.sizes[0] != 1:
        raise ValueError(f"the first scale must be 1x1 (the start token), got {layout.schedule[0]}")
    if num_scales > config.num_level_embeddings:
        raise ValueError(f"{num_scales} scales exceed the model's {config.num_level_embeddings} level embeddings")
    cfgs, taus = settings.per_scale("cfg", num_scales), settings.per_scale("tau", num_scales)
    if settings.cfg_insertion_layer < 0 and config.depth + settings.cfg_insertion_layer < 0:
        raise ValueError(
            f"cfg_insertion_layer={settings.cfg_insertion_layer} is deeper than the model ({config.depth})"
        )
    B = text.batch_size
    check_generators(generator, B)
    forced = list(prefix_bits or [])
    if len(forced) > num_scales:
        raise ValueError(f"prefix_bits has {len(forced)} scales, the layout only {num_scales}")
    for k, given in enumerate(forced):
        want = (B, *layout.schedule[k], config.codebook_dim)
        if tuple(given.shape) != want:
            raise ValueError(f"prefix_bits[{k}] has shape {tuple(given.shape)}, expected {want} (B, h, w, d)")
    keeps = _check_edit(source_bits, keep_masks, layout, (B, config.codebook_dim))
    if keeps is not None and forced:
        raise ValueError("give prefix_bits or source_bits/keep_masks, not both (keep whole scales with all-True masks)")
    use_cfg = settings.uses_cfg
    if use_cfg:
        uncond = negative_text if negative_text is not None else model.null_text(text.lengths)
        if uncond.batch_size != B:
            raise ValueError(f"negative text has {uncond.batch_size} prompts, expected {B}")
        text = text.cat(uncond.to(text.features_NC.dtype))
    rows = 2 * B if use_cfg else B
    device = model.pos_start.device
    cond = model.condition(text.to(device))
    block_dtype = model.blocks[0].sa.mat_qkv.weight.dtype
    rope = layout.rope(config.head_dim, config.rope_base, device)
    model.cache_text_kv(cond)  # text keys/values once per image, in both modes
    patchify = config.spatial_patchify
    d_tok = config.tokenizer_codebook_dim
    final = layout.schedule[-1]
    final_lat = (2 * final[0], 2 * final[1]) if patchify else final
    summed = torch.zeros(B, d_tok, *final_lat, device=device)
    feature_layer = config.depth + settings.cfg_insertion_layer if settings.cfg_insertion_layer < 0 else None
    compiled = _compiled_steps_for(model, settings, device, use_cache)
    if compiled is not None:
        caches = compiled.caches(model, layout, rows, block_dtype)
        pad_text_keys(cond)
        compiled.begin_image()
    elif use_cache:
        caches = [
            KVCache(rows, config.num_heads, layout.total_tokens, config.head_dim, block_dtype, device,
                    model.attention_kernel)
            for _ in model.blocks
        ]
    step = compiled if compiled is not None else scale_step
    inputs: torch.Tensor | None = None
    prefix_tokens: list[torch.Tensor] = []

    for k, (h, w) in enumerate(layout.schedule):
        cfg_k, tau_k = cfgs[k], taus[k]
        plan = ScalePlan(
            index=k,
            start=layout.starts[k],
            end=layout.ends[k],
            size=(h, w),
            batch=B,
            rows=rows,
            guided=use_cfg and feature_layer is None and cfg_k != 1.0,
            feature_layer=feature_layer if use_cfg and cfg_k != 1.0 else None,
            sample=k >= len(forced) and config.head_type == "bits",
            top_k=settings.top_k,
            top_p=settings.top_p,
            patchify=patchify,
            code_scale=code_magnitude(d_tok, code_scale),
            final_latent=final_lat,
            next_size=layout.schedule[k + 1] if k < num_scales - 1 else None,
        )
        given = forced[k].to(device=device, dtype=torch.uint8).reshape(B, h * w, -1) if k < len(forced) else None
        keep = None
        if keeps is not None:
            given = source_bits[k].to(device=device, dtype=torch.uint8).reshape(B, h * w, -1)
            keep = keeps[k].to(device=device, dtype=torch.bool).reshape(B, h * w, 1)
        uniform = None
        if plan.sample and settings.top_k != 1:  # drawn here, outside the (compiled) step, in the eager order
            uniform = _uniform((B, h * w, config.codebook_dim), generator, device)
        if use_cache and config.head_type == "bits":
            bits_Bhwd, summed, inputs, logits, head = step(
                model, plan, inputs, cond, rope, caches, cfg_k, tau_k, uniform, given, summed, keep
            )
        else:
            x = model.embed_scale(k, None if k == 0 else inputs.repeat(rows // B, 1, 1), cond)
            cos, sin = rope
            if use_cache:
                hid = model.run_blocks(x, cond, (cos[plan.start : plan.end], sin[plan.start : plan.end]), caches,
                                       feature_hook(plan, cfg_k))
            else:
                prefix_tokens.append(x)
                prefix = layout.prefix(k + 1)
                ctx = ChunkedAttention(prefix.starts, prefix.ends, model.attention_kernel)  # exact, no mask
                full = model.run_blocks(
                    torch.cat(prefix_tokens, 1), cond, (cos[: plan.end], sin[: plan.end]), [ctx] * config.depth,
                    feature_hook(plan, cfg_k),
                )
                hid = full[:, plan.start : plan.end]
            logits, head = scale_logits(model, plan, hid, cond, cfg_k, tau_k)
            if given is not None and keep is None:
                bits = given
            elif config.head_type == "bits":
                bits = bits_from_logits(logits, uniform, settings.top_k, settings.top_p)
            else:
                idx = sample_indices(
                    logits.flatten(0, 1), top_k=settings.top_k, top_p=settings.top_p, generator=generator
                )
                bits = indices_to_bits(idx.view(B, -1), config.codebook_dim, check_range=False)
            bits_Bhwd, summed, inputs = accumulate(plan, keep_given(bits, given, keep), summed)
        yield ScaleStep(
            index=k,
            size=(h, w),
            bits=bits_Bhwd,
            summed_codes=summed,
            logits=logits if keep_logits else None,
            head_logits=head if keep_logits else None,
        )


def _check_edit(
    source_bits: Sequence[torch.Tensor] | None,
    keep_masks: Sequence[torch.Tensor] | None,
    layout: ScaleLayout,
    batch_and_bits: tuple[int, int],
) -> list[torch.Tensor] | None:
    """The keep-masks when editing (checked against the schedule), None otherwise."""
    if source_bits is None and keep_masks is None:
        return None
    if source_bits is None or keep_masks is None:
        raise ValueError("editing needs both source_bits and keep_masks (one per scale)")
    B, d = batch_and_bits
    if len(source_bits) != layout.num_scales or len(keep_masks) != layout.num_scales:
        raise ValueError(
            f"editing needs source bits and keep-masks for all {layout.num_scales} scales, got "
            f"{len(source_bits)} and {len(keep_masks)}"
        )
    for k, (bits, keep) in enumerate(zip(source_bits, keep_masks, strict=True)):
        h, w = layout.schedule[k]
        if tuple(bits.shape) != (B, h, w, d):
            raise ValueError(f"source_bits[{k}] has shape {tuple(bits.shape)}, expected {(B, h, w, d)} (B, h, w, d)")
        if tuple(keep.shape) != (B, h, w):
            raise ValueError(f"keep_masks[{k}] has shape {tuple(keep.shape)}, expected {(B, h, w)} (B, h, w)")
    return list(keep_masks)


def _compiled_steps_for(
    model: InfinityTransformer, settings: SamplingConfig, device: torch.device, use_cache: bool
) -> CompiledSteps | None:
    """The model's compiled steps when ``settings`` asks for them and they can run here, else None (logged)."""
    if not settings.compiles_on(device):
        return None
    reason = None
    if not use_cache:
        reason = "the recompute-the-prefix mode runs eagerly"
    elif model.config.head_type != "bits":
        reason = "the index-head ablation samples with multinomial, which runs eagerly"
    else:
        reason = compile_unavailable_reason(device)
    steps = None if reason else compiled_steps(model, device)
    if steps is not None and steps.failure:
        reason = f"an earlier compilation failed ({steps.failure})"
    if reason:
        if settings.compile == "on":
            logger.info("compile='on' but sampling runs eagerly: %s", reason)
        return None
    return steps


def sample(
    model: InfinityTransformer,
    text: PackedText,
    layout: ScaleLayout,
    settings: SamplingConfig | None = None,
    **kwargs,
) -> SampleResult:
    """Run :func:`iter_scales` to the end; returns all bits, the summed codes and (``keep_logits``) the logits."""
    result = SampleResult(bits=[], summed_codes=torch.empty(0))
    for step in iter_scales(model, text, layout, settings, **kwargs):
        result.bits.append(step.bits)
        result.summed_codes = step.summed_codes
        if step.logits is not None:
            result.logits.append(step.logits)
            result.head_logits.append(step.head_logits)
    return result
