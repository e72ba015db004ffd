"""Ray Train entry point: ``TorchTrainer`` over N workers (DDP, or FSDP2 for large presets), MLflow on rank 0.

Fault tolerance: workers checkpoint into ``run.out_dir/checkpoints`` (a path every worker can reach: local disk for a
single node, shared storage for a cluster). When a worker dies, Ray's ``FailureConfig(max_failures)`` restarts the
worker group, every worker re-enters :func:`train_loop_per_worker`, and :class:`ARTrainer` resumes from the newest
checkpoint — so the step count continues where the last checkpoint left it.

Works the same locally (``ray.init()`` starts a local cluster) and on a running cluster
(``ray job submit --address http://HEAD:8265 -- python -m bitwise_ar.train CONFIG --ray``; ``RAY_ADDRESS`` or
``ray.address`` selects it).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from bitwise_ar.train.config import TrainConfig

logger = logging.getLogger(__name__)


def _wrap_fn(config: TrainConfig):
    def wrap(model):
        import torch

        if config.ray.strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for block in model.blocks:
                fully_shard(block)
            return fully_shard(model)
        from ray.train.torch import prepare_model

        if not torch.distributed.is_initialized():
            return model
        return prepare_model(model, parallel_strategy="ddp", parallel_strategy_kwargs={"find_unused_parameters": True})

    return wrap


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What every Ray worker runs: build an :class:`ARTrainer` for its rank, resume, train, report metrics."""
    import ray.train
    import torch

    from bitwise_ar.train.trainer import ARTrainer

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    config = TrainConfig.from_dict(loop_config["config"])
    torch.set_num_threads(max(1, int(loop_config.get("threads_per_worker", 1))))
    tracker = None
    if rank == 0 and loop_config.get("mlflow_run_id"):
        from bsq_tokenizer.train.tracking import MLflowTracker

        tracker = MLflowTracker(run_id=loop_config["mlflow_run_id"], tracking_uri=loop_config["tracking_uri"])
    device = ray.train.torch.get_device() if config.ray.use_gpu else torch.device("cpu")
    trainer = ARTrainer(config, rank=rank, world_size=world, device=device, wrap=_wrap_fn(config), tracker=tracker)
    kill_at = int(loop_config.get("kill_at_step", 0))
    marker = Path(config.run.out_dir) / ".killed_once"
    while trainer.step < config.train.steps:
        if kill_at and rank == 0 and trainer.step == kill_at and not marker.exists():
            marker.touch()
            logger.warning("test hook: worker 0 exits at step %d", trainer.step)
            os._exit(1)
        chunk = min(config.run.log_every, config.train.steps - trainer.step)
        if kill_at and trainer.step < kill_at:
            chunk = min(chunk, kill_at - trainer.step)
        metrics = trainer.fit(max_steps=chunk)
        ray.train.report({"step": trainer.step, **{k.replace("/", "_"): v for k, v in metrics.items()}})
    if rank == 0:
        trainer.save()


def run_ray(
    config: TrainConfig, *, config_path: str | None = None, threads_per_worker: int = 1, kill_at_step: int = 0
) -> dict[str, Any]:
    """Launch :func:`train_loop_per_worker` with Ray Train; returns ``{"metrics", "mlflow_run_id", "checkpoint"}``.

    ``kill_at_step`` is a fault-injection hook for tests: worker 0 exits hard (``os._exit``) once at that step.

    The driver creates the MLflow run (params = flattened config, the config file as an artifact), workers log
    metrics and images into it from rank 0, and the driver logs the final model with its config at the end.
    """
    try:
        import ray
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as err:  # pragma: no cover
        raise ImportError("Ray training needs the train extra: pip install 'bitwise-ar[train]'") from err
    from bsq_tokenizer.train.tracking import MLflowTracker, flatten

    out_dir = Path(config.run.out_dir).resolve()
    config = config.replace(run=config.run.__class__(**{**config.run.__dict__, "out_dir": str(out_dir)}))
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id, uri, tracker = None, None, None
    if config.tracking.kind == "mlflow":
        id_file = out_dir / "mlflow_run_id"
        tracker = MLflowTracker(
            experiment=config.tracking.experiment,
            run_name=config.tracking.run_name or None,
            tracking_uri=config.tracking.tracking_uri or None,
            run_id=id_file.read_text().strip() if id_file.is_file() else None,
        )
        id_file.write_text(tracker.run_id)
        run_id, uri = tracker.run_id, tracker.tracking_uri
        tracker.log_params(flatten(config.to_dict()))
        if config_path:
            tracker.log_artifact(config_path, "config")
    if not ray.is_initialized():
        address = config.ray.address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.to_dict(), "mlflow_run_id": run_id, "tracking_uri": uri, "threads_per_worker": threads_per_worker,
                           "kill_at_step": kill_at_step},
        scaling_config=ScalingConfig(num_workers=config.ray.num_workers, use_gpu=config.ray.use_gpu),
        run_config=RunConfig(
            name=f"bitwise-ar-{out_dir.name}",
            storage_path=str(out_dir / "ray"),
            failure_config=FailureConfig(max_failures=config.ray.max_failures),
        ),
    )
    result = trainer.fit()
    from bitwise_ar.train.checkpoint import latest_checkpoint

    final = latest_checkpoint(out_dir / "checkpoints")
    if tracker is not None:
        if final is not None:
            model_dir = out_dir / "final_model"
            export_checkpoint(final, model_dir)
            tracker.log_artifact(model_dir, "model")
        tracker.finish()
    return {"metrics": dict(result.metrics or {}), "mlflow_run_id": run_id, "checkpoint": final}


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write a checkpoint's transformer (``save_pretrained`` layout) plus ``train_config.json`` and ``sampler.json``."""
    import json

    from bitwise_ar.config import InfinityConfig
    from bitwise_ar.model import InfinityTransformer
    from bitwise_ar.train.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    model = InfinityTransformer(InfinityConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out / "transformer")
    (out / "train_config.json").write_text(json.dumps(state["train_config"], indent=2))
    (out / "sampler.json").write_text(json.dumps(state["sampler"], indent=2))
    return out
