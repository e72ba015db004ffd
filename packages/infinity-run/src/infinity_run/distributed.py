"""Process-group helpers that also work in a single process (no process group): rank, barrier, gathers, global
means of metrics, and FSDP2 sharding with shard-by-shard materialisation of a model built on the meta device."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "average_gradients_",
    "barrier",
    "copy_into_parameter_",
    "fsdp_shard",
    "gather_objects",
    "global_mean",
    "mix_seed",
    "rank_and_world",
]


def mix_seed(*numbers: int) -> int:
    """A 63-bit seed from integers, stable across processes, machines and Python versions: seeds derived from
    (run seed, step, sample key, ...) make every random draw independent of how the work is split over ranks."""
    text = repr(tuple(int(n) for n in numbers)).encode()
    return ((zlib.adler32(text[::-1]) << 32) | zlib.crc32(text)) & (2**63 - 1)


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process)."""
    _, world = rank_and_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def global_mean(metrics: Mapping[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean of each metric over the ranks (every rank passes the same keys); the identity in a single process."""
    _, world = rank_and_world()
    if world == 1 or not metrics:
        return dict(metrics)
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return {k: float(v) / world for k, v in zip(keys, values.tolist(), strict=True)}


def average_gradients_(parameters: Iterable[nn.Parameter]) -> None:
    """Replace every gradient by its mean over the ranks (one flat all-reduce): data parallelism for models whose
    training step is not a single ``forward`` call (so DDP's hooks do not fit); a no-op in a single process."""
    _, world = rank_and_world()
    grads = [p.grad for p in parameters if p.grad is not None]
    if world == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def fsdp_shard(
    model: nn.Module,
    blocks: Iterable[nn.Module],
    *,
    mixed_precision: bool = False,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """FSDP2 (``fully_shard``) each block, then the root; ``mixed_precision`` computes in bf16 and reduces
    gradients in fp32 (the CUDA setting). Parameters become DTensors sharded on dim 0 over all ranks. Build the
    optimiser after this call (it must hold the sharded parameters)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kwargs: dict[str, Any] = {"reshard_after_forward": reshard_after_forward}
    if mixed_precision:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def copy_into_parameter_(target: torch.Tensor, full: torch.Tensor) -> None:
    """Copy a full tensor into ``target``: a plain tensor, or a DTensor shard (only this rank's slice is copied,
    so a rank never holds more than one full tensor at a time)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        if isinstance(target, DTensor):
            local = distribute_tensor(
                full.to(device=target.device, dtype=target.dtype), target.device_mesh, target.placements,
                src_data_rank=None,
            )
            target.to_local().copy_(local.to_local())
        else:
            target.copy_(full.to(device=target.device, dtype=target.dtype))


def materialize_(
    model: nn.Module, device: torch.device | str, value_of: Callable[[str, torch.Tensor], torch.Tensor]
) -> nn.Module:
    """Give a meta-device (possibly sharded) model real storage on ``device`` and fill every parameter and buffer
    with ``value_of(name, tensor)`` (a full CPU tensor), one tensor at a time."""
    model.to_empty(device=device)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        copy_into_parameter_(tensor, value_of(name, tensor))
    return model
