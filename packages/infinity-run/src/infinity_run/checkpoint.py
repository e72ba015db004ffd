"""Sharded training checkpoints with ``torch.distributed.checkpoint`` (DCP), one format for 1 to N workers.

A checkpoint is a directory:

* DCP files (``.metadata`` and ``__<rank>_<i>.distcp``): the model and optimiser state, each rank writing its own
  shards (FSDP) or one copy of replicated tensors (DDP / one process). DCP reshards on load, so a checkpoint written
  by 2 workers loads on 1 or 4.
* ``rank_<r>.pt``: small per-rank state (RNG), loaded with ``weights_only=True``.
* ``manifest.json``, written last by rank 0 once every rank has finished: the format, the step, the world size, the
  caller's metadata (configs) and every file with its size. A directory without a manifest, or whose files do not
  match it (a kill during the write, a truncated copy), is not a checkpoint: :meth:`CheckpointStore.latest` skips it
  with a warning and uses the previous complete one.

:class:`CheckpointStore` keeps ``step_<step>`` directories under a root (written to a temporary name, renamed when
complete, the newest ``keep`` kept); under Ray Train the same directories are reported with ``ray.train.report`` and
persisted by Ray (:mod:`infinity_run.ray_train`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from infinity_run.distributed import barrier, gather_objects, rank_and_world

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "MANIFEST",
    "CheckpointStore",
    "Checkpointer",
    "LocalCheckpointer",
    "checkpoint_problems",
    "load_full_model_state",
    "read_checkpoint",
    "read_manifest",
    "write_checkpoint",
]

FORMAT = "infinity-run/checkpoint-1"
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def _rank_file(rank: int) -> str:
    return f"rank_{rank:05d}.pt"


def _own_files(directory: Path, rank: int) -> dict[str, int]:
    names = [p for p in directory.iterdir() if p.is_file() and re.fullmatch(rf"__{rank}_\d+\.distcp", p.name)]
    names.append(directory / _rank_file(rank))
    if rank == 0 and (directory / ".metadata").is_file():
        names.append(directory / ".metadata")
    return {p.name: p.stat().st_size for p in names}


Optimizers = torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None


def _optimizers(optimizer: Optimizers) -> tuple[torch.optim.Optimizer, ...]:
    if optimizer is None:
        return ()
    if isinstance(optimizer, torch.optim.Optimizer):
        return (optimizer,)
    return tuple(o for o in optimizer if o is not None)


def write_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer: Optimizers,
    *,
    step: int,
    meta: Mapping[str, Any] | None = None,
    rank_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write one checkpoint into ``directory`` (collective: every rank calls it; ranks may pass different local
    directories, e.g. Ray's per-worker staging dirs, which Ray merges). Rank 0 writes the manifest last."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rank, world = rank_and_world()
    optimizers = _optimizers(optimizer)
    if optimizers:
        model_state, optim_state = get_state_dict(model, optimizers)
        state = {"model": model_state, "optim": optim_state}
    else:
        state = {"model": get_model_state_dict(model)}
    with _single_process_quiet():
        dcp.save(state, checkpoint_id=str(directory), no_dist=not is_distributed())
    torch.save(dict(rank_state or {}), directory / _rank_file(rank))
    files: dict[str, int] = {}
    for part in gather_objects(_own_files(directory, rank)):
        files.update(part)
    if rank == 0:
        manifest = {
            "format": FORMAT,
            "step": int(step),
            "world_size": world,
            "has_optimizer": bool(optimizers),
            "meta": dict(meta or {}),
            "files": files,
        }
        tmp = directory / (MANIFEST + ".tmp")
        with open(tmp, "w") as handle:
            handle.write(json.dumps(manifest, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, directory / MANIFEST)
    barrier()
    return directory


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a complete checkpoint; ValueError naming the problems otherwise."""
    problems = checkpoint_problems(directory)
    if problems:
        raise ValueError(f"{directory} is not a complete checkpoint: {'; '.join(problems)}")
    return json.loads((Path(directory) / MANIFEST).read_text())


def checkpoint_problems(directory: str | Path) -> list[str]:
    """Why ``directory`` is not a complete checkpoint (empty list: it is)."""
    directory = Path(directory)
    if not directory.is_dir():
        return [f"{directory} is not a directory"]
    path = directory / MANIFEST
    if not path.is_file():
        return [f"no {MANIFEST} (the write did not finish)"]
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return [f"{MANIFEST} is not valid JSON ({err})"]
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return [f"{MANIFEST} is not a {FORMAT} manifest"]
    problems = []
    for name, size in manifest.get("files", {}).items():
        file = directory / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif file.stat().st_size != size:
            problems.append(f"{name} has {file.stat().st_size} bytes, the manifest says {size}")
    if ".metadata" not in manifest.get("files", {}):
        problems.append("the manifest lists no DCP .metadata")
    return problems


def read_checkpoint(
    directory: str | Path,
    model: nn.Module,
    optimizer: Optimizers = None,
    *,
    strict: bool = True,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Load a checkpoint into ``model`` (and ``optimizer``), resharding to this world size (collective).

    Returns ``(manifest, rank_state)``; ``rank_state`` is this rank's saved state when the world size is unchanged,
    else None. A model whose keys or shapes differ raises ValueError listing the differences.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    rank, world = rank_and_world()
    optimizers = _optimizers(optimizer)
    with_optim = bool(optimizers) and manifest.get("has_optimizer", False)
    if with_optim:
        model_state, optim_state = get_state_dict(model, optimizers)
        state = {"model": model_state, "optim": optim_state}
    else:
        state = {"model": get_model_state_dict(model)}
    check_keys_and_shapes(state["model"], directory, strict=strict)
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=str(directory), no_dist=not is_distributed())
    if with_optim:
        set_state_dict(model, optimizers, model_state_dict=state["model"], optim_state_dict=state["optim"])
    else:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, state["model"])
    rank_state = None
    if manifest["world_size"] == world and (directory / _rank_file(rank)).is_file():
        rank_state = torch.load(directory / _rank_file(rank), map_location="cpu", weights_only=True)
    return manifest, rank_state


def _saved_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    reader = dcp.FileSystemReader(str(directory))
    metadata = reader.read_metadata()
    out = {}
    for key, item in metadata.state_dict_metadata.items():
        if key.startswith("model.") and hasattr(item, "size"):
            out[key[len("model.") :]] = tuple(item.size)
    return out


def check_keys_and_shapes(model_state: Mapping[str, Any], directory: Path, *, strict: bool = True) -> None:
    """ValueError listing missing/unexpected keys and shape differences between a checkpoint and a model."""
    saved = _saved_shapes(directory)
    expected = {k: tuple(v.shape) for k, v in model_state.items() if hasattr(v, "shape")}
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected)) if strict else []
    shapes = sorted(f"{k}: checkpoint {saved[k]} vs model {expected[k]}" for k in set(saved) & set(expected) if saved[k] != expected[k])
    if missing or unexpected or shapes:
        parts = [f"checkpoint {directory} does not fit the model"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape differences", shapes)):
            if items:
                shown = ", ".join(items[:12]) + (f", ... ({len(items) - 12} more)" if len(items) > 12 else "")
                parts.append(f"{len(items)} {title}: {shown}")
        raise ValueError("; ".join(parts))


def load_full_model_state(directory: str | Path, template: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The full (unsharded) model state of a checkpoint in one process, shaped like ``template`` (e.g. a freshly
    built model's ``state_dict()``); used to export a checkpoint to a pipeline directory."""
    directory = Path(directory)
    read_manifest(directory)
    check_keys_and_shapes(template, directory)
    state = {"model": {k: torch.empty_like(v, device="cpu") for k, v in template.items()}}
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=str(directory), no_dist=True)
    return state["model"]


class CheckpointStore:
    """``root/step_<step>`` checkpoint directories: atomic (temporary name, renamed when complete), newest ``keep``
    kept, :meth:`latest` skipping incomplete ones. Every rank must see ``root`` (one node, or shared storage)."""

    def __init__(self, root: str | Path, *, keep: int = 2) -> None:
        self.root, self.keep = Path(root), keep

    def path(self, step: int) -> Path:
        return self.root / f"step_{step:07d}"

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: Optimizers,
        *,
        meta: Mapping[str, Any] | None = None,
        rank_state: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``step_<step>`` (collective) and prune old checkpoints; returns the directory."""
        rank, _ = rank_and_world()
        final, staging = self.path(step), self.root / f".staging_step_{step:07d}"
        if rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        barrier()
        write_checkpoint(staging, model, optimizer, step=step, meta=meta, rank_state=rank_state)
        if rank == 0:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
            self.prune()
        barrier()
        return final

    def steps(self) -> list[tuple[int, Path]]:
        """All ``step_*`` directories (complete or not), oldest first."""
        if not self.root.is_dir():
            return []
        found = [(int(m[1]), p) for p in self.root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
        return sorted(found)

    def prune(self) -> None:
        """Remove staging leftovers and all but the newest ``keep`` complete checkpoints."""
        for leftover in self.root.glob(".staging_step_*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if self.keep <= 0:
            return
        complete = [p for _, p in self.steps() if not checkpoint_problems(p)]
        for old in complete[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def latest(self, *, warn: Callable[[str], None] | None = None) -> Path | None:
        """The newest complete checkpoint; incomplete newer ones are skipped with a warning."""
        return latest_complete([p for _, p in self.steps()], warn=warn)


class Checkpointer(Protocol):
    """Where a trainer's checkpoints go: :class:`LocalCheckpointer`, or Ray's storage
    (:class:`infinity_run.ray_train.RayCheckpointer`). ``save`` is collective."""

    def latest(self) -> Path | None: ...

    def save(
        self, step: int, model: nn.Module, optimizer: Any, *, meta: dict, rank_state: dict, metrics: dict
    ) -> Path | None: ...


class LocalCheckpointer:
    """The checkpointer of a run outside Ray: a :class:`CheckpointStore` (every rank must see its root)."""

    def __init__(self, root: str | Path, *, keep: int = 2) -> None:
        self.store = CheckpointStore(root, keep=keep)

    def latest(self) -> Path | None:
        return self.store.latest()

    def save(
        self, step: int, model: nn.Module, optimizer: Any, *, meta: dict, rank_state: dict, metrics: dict
    ) -> Path:
        return self.store.save(step, model, optimizer, meta=meta, rank_state=rank_state)


def latest_complete(candidates: list[Path], *, warn: Callable[[str], None] | None = None) -> Path | None:
    """The last complete checkpoint of ``candidates`` (oldest first); skipped ones are reported via ``warn``."""
    warn = warn or logger.warning
    for path in reversed(candidates):
        problems = checkpoint_problems(path)
        if not problems:
            return path
        warn(f"skipping incomplete checkpoint {path}: {'; '.join(problems)}")
    return None


def full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict of a (possibly sharded) model on CPU, gathered on every rank (collective)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """DCP warns on every call without a process group; one process is a supported case here, not a mistake."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()
