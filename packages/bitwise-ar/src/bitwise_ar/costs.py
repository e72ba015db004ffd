"""Analytic cost model of Infinity inference: FLOPs per image, bytes per scale, roofline bound, peak memory.

Formulas follow the project's perf notes (appendix): a multiply-add is 2 FLOPs; b = 2 rows with CFG; per scale k
with n_k new tokens and cum_k tokens so far, depth D, width C, FFN width F, Lt text tokens:

    linear_k    = b n_k D 2 (6C^2 + 2CF)        qkv + proj (4C^2), cross-attn q + proj (2C^2), FFN (2CF)
    selfattn_k  = b D 4 n_k cum_k C             QK^T + PV against the KV cache
    crossattn_k = b D 4 n_k Lt C
    ca_kv       = b D 4 C^2 Lt                  text keys/values, once per image here (official: every scale)
    head_k      = b n_k 2 C V                   (small; included so counts can be compared with a FLOP counter)

Without a KV cache (recompute the prefix every scale) n_k becomes cum_k in the linear/head terms and n_k cum_k becomes
sum_{j<=k} n_j cum_j in the attention term.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bitwise_ar.config import InfinityConfig, count_parameters_analytic

# bf16 dense peak FLOP/s and HBM bandwidth (bytes/s) of common GPUs.
GPU_PEAKS: dict[str, tuple[float, float]] = {
    "H100": (989e12, 3.35e12),
    "H200": (989e12, 4.8e12),
    "A100": (312e12, 2.04e12),
}


@dataclass(frozen=True)
class ScaleCost:
    tokens: int
    cumulative: int
    linear: float
    self_attention: float
    cross_attention: float
    head: float

    @property
    def total(self) -> float:
        return self.linear + self.self_attention + self.cross_attention + self.head


def scale_costs(
    config: InfinityConfig,
    schedule: Sequence[tuple[int, int]],
    *,
    text_tokens: int = 64,
    cfg: bool = True,
    kv_cache: bool = True,
) -> list[ScaleCost]:
    """FLOPs of every scale of one image (``cfg`` doubles the rows; the head runs on both halves with CFG)."""
    b = 2 if cfg else 1
    C, F, D = config.embed_dim, config.ffn_hidden, config.depth
    costs, cum, pairs = [], 0, 0
    for h, w in schedule:
        n = h * w
        cum += n
        pairs += n * cum
        rows = n if kv_cache else cum
        attn_pairs = n * cum if kv_cache else pairs
        costs.append(
            ScaleCost(
                tokens=n,
                cumulative=cum,
                linear=b * rows * D * 2 * (6 * C * C + 2 * C * F),
                self_attention=b * D * 4 * attn_pairs * C,
                cross_attention=b * D * 4 * rows * text_tokens * C,
                head=b * rows * 2 * C * config.num_logits,
            )
        )
    return costs


def flops_per_image(
    config: InfinityConfig,
    schedule: Sequence[tuple[int, int]],
    *,
    text_tokens: int = 64,
    cfg: bool = True,
    kv_cache: bool = True,
) -> dict[str, float]:
    """Totals of :func:`scale_costs` plus the once-per-image text keys/values (``ca_kv``)."""
    costs = scale_costs(config, schedule, text_tokens=text_tokens, cfg=cfg, kv_cache=kv_cache)
    b = 2 if cfg else 1
    ca_kv = b * config.depth * 4 * config.embed_dim**2 * text_tokens
    out = {
        "linear": sum(c.linear for c in costs),
        "self_attention": sum(c.self_attention for c in costs),
        "cross_attention": sum(c.cross_attention for c in costs),
        "head": sum(c.head for c in costs),
        "ca_kv": float(ca_kv),
    }
    out["total"] = sum(out.values())
    return out


def block_weight_bytes(config: InfinityConfig, bytes_per_param: int = 2) -> int:
    C, F = config.embed_dim, config.ffn_hidden
    return config.depth * (8 * C * C + 2 * C * F) * bytes_per_param


def scale_bytes(config: InfinityConfig, cost: ScaleCost, *, cfg: bool = True, bytes_per_el: int = 2) -> float:
    """HBM bytes of one cached scale: block weights read once + KV read + ~12 activation passes per layer."""
    b = 2 if cfg else 1
    C, D = config.embed_dim, config.depth
    kv = b * D * 2 * cost.cumulative * C * bytes_per_el
    act = b * D * 12 * cost.tokens * C * bytes_per_el
    return block_weight_bytes(config, bytes_per_el) + kv + act


def roofline_seconds(
    config: InfinityConfig,
    schedule: Sequence[tuple[int, int]],
    peak_flops: float,
    bandwidth: float,
    *,
    text_tokens: int = 64,
    cfg: bool = True,
) -> list[float]:
    """Per-scale lower bound max(FLOPs / peak, bytes / bandwidth) for the KV-cached transformer."""
    return [
        max(c.total / peak_flops, scale_bytes(config, c, cfg=cfg) / bandwidth)
        for c in scale_costs(config, schedule, text_tokens=text_tokens, cfg=cfg)
    ]


def inference_memory_bytes(
    config: InfinityConfig,
    schedule: Sequence[tuple[int, int]],
    *,
    batch: int = 1,
    cfg: bool = True,
    block_bytes: int = 2,
    text_tokens: int = 512,
) -> dict[str, float]:
    """Peak-memory terms of transformer inference (excluding the text encoder, which is released after encoding).

    * weights: blocks in ``block_bytes`` per parameter, the rest (text path, embeddings, head) fp32;
    * kv_cache: K and V of every layer for the whole sequence, (b, H, L, hd) each, in the block dtype;
    * activations: the largest scale's working set: fp32 residual + normalised copy, qkv, FFN hidden, logits;
    * text: projected text memory and its per-layer keys/values.
    """
    b = batch * (2 if cfg else 1)
    C, F, D, L = config.embed_dim, config.ffn_hidden, config.depth, sum(h * w for h, w in schedule)
    n_max = max(h * w for h, w in schedule)
    block_params = D * (8 * C * C + 2 * C * F + 6 * C + 9 * C + config.num_heads)

    other_params = count_parameters_analytic(config) - block_params
    weights = block_params * block_bytes + other_params * 4
    kv_cache = 2 * b * D * L * C * block_bytes
    activations = b * n_max * (4 * C * 4 + 3 * C * block_bytes + F * block_bytes * 2 + config.num_logits * 4 * 3)
    text = b * text_tokens * C * (4 + 2 * D * block_bytes)
    return {
        "weights": float(weights),
        "kv_cache": float(kv_cache),
        "activations": float(activations),
        "text": float(text),
        "total": float(weights + kv_cache + activations + text),
    }


# Activation elements kept for the backward pass, per token, measured on this implementation (fp32, CPU, saved-tensor
# hooks; tests/test_train_memory.py re-measures them): each block keeps about 23.3 C + 2 F values per token, the
# parts outside the blocks (embedding, AdaLN head, logits) about 4.5 C; with full-block activation checkpointing a
# block keeps only its input (C) and one block's activations are live again while it is recomputed.
BLOCK_ACTIVATIONS_PER_C = 23.3
BLOCK_ACTIVATIONS_PER_F = 2.0
OUTSIDE_ACTIVATIONS_PER_C = 3.4


def training_memory_bytes(
    config: InfinityConfig,
    *,
    tokens_per_sample: int,
    batch_per_gpu: int,
    world_size: int = 1,
    strategy: str = "fsdp",
    activation_checkpointing: bool = False,
    activation_bytes: int = 2,
    compute_bytes: int = 2,
) -> dict[str, float]:
    """Per-GPU memory of one training step (AdamW, fp32 master weights), by term.

    * weights / grads / optimizer: fp32 parameters, fp32 gradients and AdamW's two moments; divided by
      ``world_size`` under FSDP (``"fsdp"``), whole on every GPU under DDP (``"ddp"``);
    * gathered: FSDP's unsharded working copies in ``compute_bytes`` (the block being computed and the next one
      prefetched, their gradients before the reduce-scatter, and the parameters outside the blocks); 0 for DDP;
    * activations: what the backward pass needs (see the module constants), in ``activation_bytes`` per value.

    The text encoder and tokenizer are frozen and not counted (their weights are in bf16/fp32 on top, ~2.3 GB for
    flan-t5-xl in bf16).
    """
    if strategy not in ("fsdp", "ddp"):
        raise ValueError(f"strategy must be 'fsdp' or 'ddp', got {strategy!r}")
    C, F, D = config.embed_dim, config.ffn_hidden, config.depth
    params = count_parameters_analytic(config)
    block = 8 * C * C + 2 * C * F + 6 * C + 9 * C + config.num_heads
    shard = world_size if strategy == "fsdp" else 1
    weights, grads, optimizer = 4 * params / shard, 4 * params / shard, 8 * params / shard
    gathered = 0.0
    if strategy == "fsdp" and world_size > 1:
        gathered = (2 * block + 2 * block + (params - D * block)) * compute_bytes
    tokens = tokens_per_sample * batch_per_gpu
    per_block = BLOCK_ACTIVATIONS_PER_C * C + BLOCK_ACTIVATIONS_PER_F * F
    if activation_checkpointing:
        values = tokens * (D * C + OUTSIDE_ACTIVATIONS_PER_C * C + per_block)
    else:
        values = tokens * (D * per_block + OUTSIDE_ACTIVATIONS_PER_C * C)
    activations = values * activation_bytes
    terms = {"weights": weights, "grads": grads, "optimizer": optimizer, "gathered": gathered, "activations": activations}
    return {**{k: float(v) for k, v in terms.items()}, "total": float(sum(terms.values()))}


def training_flops_per_sample(config: InfinityConfig, schedule: Sequence[tuple[int, int]], *, text_tokens: int = 64) -> float:
    """Transformer FLOPs of training on one image: the teacher-forced forward pass over the whole sequence (the same
    work as a KV-cached generation without CFG: every token once, block-causal attention to its prefix, text keys and
    values once) plus a backward pass of twice that (the usual 3x rule). The frozen text encoder and tokenizer are not
    counted; multiply by the images per optimiser step for FLOPs per step."""
    return 3.0 * flops_per_image(config, schedule, text_tokens=text_tokens, cfg=False, kv_cache=True)["total"]
