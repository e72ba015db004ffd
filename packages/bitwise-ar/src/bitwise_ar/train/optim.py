"""AdamW with the official no-weight-decay groups and the learning-rate schedule (reference §5.2)."""

from __future__ import annotations

import math

import torch
from torch import nn

from bitwise_ar.train.config import OptimSection

# Parameter-name fragments that never get weight decay (besides all 1-D tensors and biases).
NO_DECAY_NAMES: tuple[str, ...] = (
    "cfg_uncond",
    "pos_start",
    "lvl_embed",
    "gamma",
    "beta",
    "ada_gss",
    "scale_mul",
    "text_proj_for_sos.ca.mat_q",
    "cls_token",
    "start_token",
    "pos_embed",
)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights, and the official no-decay set (biases, 1-D params, named tensors)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or any(key in name for key in NO_DECAY_NAMES):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: OptimSection) -> torch.optim.AdamW:
    """AdamW (fused on CUDA) over :func:`param_groups`."""
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas, fused=fused)


def lr_at(step: int, total_steps: int, config: OptimSection) -> float:
    """Learning rate at optimiser step ``step`` (0-based): linear warm-up from 0.5 % of peak, then the schedule."""
    peak = config.lr
    if step < config.warmup_steps:
        return peak * (0.005 + 0.995 * step / config.warmup_steps)
    if config.schedule == "constant":
        return peak
    span = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = peak * config.min_lr_ratio
    if config.schedule == "linear":
        return floor + (peak - floor) * (1.0 - progress)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
