"""Tokenizer training on Ray Train: ``ray.num_workers`` workers averaging gradients (DDP-style), checkpoints
persisted by Ray under ``<ray.storage_path>/bsq-tokenizer-<run name>``, MLflow on rank 0, the final tokenizer
exported to ``run.out_dir/tokenizer`` and logged as the run's ``model`` artifact (see :mod:`infinity_run.ray_train`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from infinity_run.checkpoint import load_full_model_state, read_manifest
from infinity_run.distributed import rank_and_world
from infinity_run.ray_train import RayCheckpointer, launch, worker_tracker

from bsq_tokenizer.config import TokenizerConfig
from bsq_tokenizer.model import BSQTokenizer
from bsq_tokenizer.train.config import TokenizerRunConfig
from bsq_tokenizer.train.data import ImageSource
from bsq_tokenizer.train.trainer import TokenizerTrainer


def build_trainer(config: TokenizerRunConfig, *, tracker: Any = None, checkpointer: Any = None, device: Any = None) -> TokenizerTrainer:
    """The trainer of this rank, reading its share of ``data.source``."""
    if not config.data.source:
        raise ValueError("data.source is empty: give a folder of images or official jsonl splits (data.source=PATH)")
    rank, world = rank_and_world()
    source = ImageSource(
        config.data.source, image_size=config.data.image_size, batch_size=config.per_worker_batch(world),
        seed=config.data.seed, rank=rank, world_size=world,
    )  # fmt: skip
    return TokenizerTrainer(
        config.train_config(), out_dir=config.run.out_dir, tracker=tracker, checkpointer=checkpointer, source=source,
        device=device, keep=config.run.keep_checkpoints,
    )  # fmt: skip


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What every Ray worker runs: a :class:`TokenizerTrainer` that resumes from Ray's latest checkpoint."""
    import ray.train

    config = TokenizerRunConfig.from_dict(loop_config["config"])
    torch.set_num_threads(config.ray.threads_per_worker)
    tracker = worker_tracker(loop_config)
    device = ray.train.torch.get_device() if config.ray.use_gpu else torch.device("cpu")
    trainer = build_trainer(config, tracker=tracker, checkpointer=RayCheckpointer(loop_config.get("storage_dir")), device=device)
    trainer.fit()
    if tracker is not None:
        tracker.finish()


def run_ray(config: TokenizerRunConfig, *, config_path: str | None = None) -> dict[str, Any]:
    """Train on Ray Train; returns ``{"metrics", "mlflow_run_id", "checkpoint", "model_dir"}``."""
    return launch(
        train_loop_per_worker, config, name_prefix="bsq-tokenizer", config_path=config_path,
        export=lambda checkpoint, out_dir: export_checkpoint(checkpoint, out_dir / "tokenizer"),
    )  # fmt: skip


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write a tokenizer training checkpoint (any worker count) as a ``save_pretrained`` tokenizer directory."""
    meta = read_manifest(checkpoint)["meta"]
    model = BSQTokenizer(TokenizerConfig.from_dict(meta["config"]["model"]))
    template = {f"tokenizer.{k}": v for k, v in model.state_dict().items()}
    state = load_full_model_state(checkpoint, template)
    model.load_state_dict({k.removeprefix("tokenizer."): v for k, v in state.items()})
    out = Path(out_dir)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.eval().save_pretrained(staging)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    return out
