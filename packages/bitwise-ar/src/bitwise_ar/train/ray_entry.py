"""Ray Train entry point: ``TorchTrainer`` over ``ray.num_workers`` workers (DDP, or FSDP2 with
``ray.strategy=fsdp``), checkpoints persisted by Ray, MLflow on rank 0.

Checkpoints: every rank writes its shards into local staging and reports them with ``ray.train.report``; Ray keeps
them under ``<ray.storage_path>/<run name>/step_<step>`` (a shared path or a cloud URI; default
``<run.out_dir>/ray``) and keeps the newest ``run.keep_checkpoints``. Fault tolerance: when a worker dies, Ray's
``FailureConfig(max_failures)`` restarts the worker group, each worker resumes from ``ray.train.get_checkpoint()`` and
the step count continues; metrics and images are logged when the checkpoint covering them is written, so the MLflow
run shows every step once.

Submitted as a Ray job (``infinity-ray submit services/ray/jobs/train.yaml run.out_dir=/shared/x``), relative output
paths and an MLflow store inside the job's temporary working directory are refused before any worker starts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from infinity_run.checkpoint import load_full_model_state, read_manifest
from infinity_run.ray_train import RayCheckpointer, launch, worker_tracker

from bitwise_ar.config import InfinityConfig
from bitwise_ar.lora import add_lora, save_adapter, unload_lora_
from bitwise_ar.mlflow_model import log_pipeline
from bitwise_ar.model import InfinityTransformer
from bitwise_ar.model_card import ModelCard
from bitwise_ar.train.config import TrainConfig
from bitwise_ar.train.sources import check_source
from bitwise_ar.train.trainer import LORA_FSDP_ERROR, ARTrainer, adapter_meta, load_tokenizer

logger = logging.getLogger(__name__)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What every Ray worker runs: an :class:`ARTrainer` for its rank that resumes from Ray's latest checkpoint."""
    import ray.train

    config = TrainConfig.from_dict(loop_config["config"])
    torch.set_num_threads(config.ray.threads_per_worker)
    rank = ray.train.get_context().get_world_rank()
    tracker = worker_tracker(loop_config)
    device = ray.train.torch.get_device() if config.ray.use_gpu else torch.device("cpu")
    checkpointer = RayCheckpointer(loop_config.get("storage_dir"))
    trainer = ARTrainer(config, device=device, strategy=config.ray.strategy, tracker=tracker, checkpointer=checkpointer)
    kill_at, kill_rank = int(loop_config.get("kill_at_step", 0)), int(loop_config.get("kill_rank", 0))
    marker = Path(config.run.out_dir) / ".killed_once"

    def fault_hook(step: int) -> None:  # test hook: one worker dies hard, once, after `kill_at` steps
        if kill_at and rank == kill_rank and step == kill_at and not marker.exists():
            marker.touch()
            logger.warning("test hook: worker %d exits at step %d", rank, step)
            os._exit(1)

    trainer.fit(on_step=fault_hook)
    if tracker is not None:
        tracker.finish()


def run_ray(
    config: TrainConfig, *, config_path: str | None = None, kill_at_step: int = 0, kill_rank: int = 0
) -> dict[str, Any]:
    """Train on Ray Train; returns ``{"metrics", "mlflow_run_id", "checkpoint", "model_dir"}``.

    The driver creates (or, for a resubmitted run with the same ``run.out_dir``, continues) the MLflow run, rank 0
    logs into it, and the driver exports the last checkpoint to ``run.out_dir/final_model`` (a pipeline directory)
    and logs it as the run's model (:func:`log_model`). ``kill_at_step`` / ``kill_rank``: fault injection for tests.
    """
    if config.lora.enabled and config.ray.strategy == "fsdp":
        raise ValueError(LORA_FSDP_ERROR)
    if config.val.enabled:  # the held-out source and its split over the workers, checked before Ray starts
        config.per_worker_val_batch(config.ray.num_workers)
        check_source(config.val, section="val")
    return launch(
        train_loop_per_worker, config, name_prefix="bitwise-ar", config_path=config_path,
        extra={"kill_at_step": kill_at_step, "kill_rank": kill_rank},
        export=lambda checkpoint, out_dir: export_checkpoint(checkpoint, out_dir / "final_model"), log_model=log_model,
    )  # fmt: skip


def log_model(model_dir: Path, tracker: Any) -> None:
    """A complete pipeline directory becomes a registrable MLflow pyfunc model (:mod:`bitwise_ar.mlflow_model`); one
    without a text encoder (a run on word-hash features) is logged as the plain ``model`` artifact."""
    if (model_dir / "text_encoder").is_dir():
        log_pipeline(model_dir, run_id=tracker.run_id, tracking_uri=tracker.tracking_uri)
    else:
        tracker.log_artifact(model_dir, "model")


def export_checkpoint(
    checkpoint: str | Path, out_dir: str | Path, *, text_encoder: str | Path | None = None
) -> Path:
    """Export a training checkpoint (any worker count) to a pipeline directory: ``transformer/`` (full weights,
    safetensors; for a LoRA run the frozen base, with the adapter apart in ``lora/``), ``tokenizer/``,
    ``text_encoder/`` (copied from the run's or ``text_encoder``), ``pipeline.json``, plus ``train_config.json`` and ``sampler.json``. A run trained on word-hash text features (``model.text_encoder
    = ""``) has no text encoder to copy: the directory then lacks ``text_encoder/`` and says so in a warning."""
    from bitwise_ar.pipeline import InfinityPipeline, PipelineDefaults

    checkpoint = Path(checkpoint)
    manifest = read_manifest(checkpoint)
    meta = manifest["meta"]
    model = InfinityTransformer(InfinityConfig.from_dict(meta["model_config"]))
    train_config = TrainConfig.from_dict(meta["train_config"])
    if train_config.lora.enabled:
        add_lora(model, train_config.lora)
    model.load_state_dict(load_full_model_state(checkpoint, model.state_dict()))
    tokenizer = load_tokenizer(
        train_config.model.tokenizer, codebook_dim=model.config.tokenizer_codebook_dim, seed=train_config.run.seed
    )
    text_dir = text_encoder or train_config.model.text_encoder or None
    size = meta.get("sampler", {}).get("image_size")
    defaults = PipelineDefaults(image_size=tuple(size) if size else None)
    out = Path(out_dir)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if train_config.lora.enabled:  # the adapter apart, the pipeline with the (unchanged) base weights
        save_adapter(model, staging / "lora", extra=adapter_meta(train_config, manifest["step"]))
        unload_lora_(model, merge=False)
    card = ModelCard(training=f"Trained with `bitwise_ar.train` for {manifest['step']} steps and exported with "
                     "`bitwise-ar export`; the run's settings are in `train_config.json`.")  # fmt: skip
    pipe = InfinityPipeline(model.eval(), tokenizer, None, defaults, card=card)
    pipe.save_pretrained(staging, text_encoder_dir=text_dir)
    (staging / "train_config.json").write_text(json.dumps(meta["train_config"], indent=2) + "\n")
    (staging / "sampler.json").write_text(json.dumps(meta.get("sampler", {}), indent=2) + "\n")
    if text_dir is None:
        logger.warning("%s has no text_encoder/: the run used word-hash text features; pass a T5 directory to load it "
                       "with InfinityPipeline", out)  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    os.replace(staging, out)
    return out
