"""Training loops on Ray Train whose results outlive the job: checkpoints reported to Ray's persistent storage,
resume through ``ray.train.get_checkpoint()``, and guards against writing into a job's temporary working dir.

Driver side: :func:`job_dir_problems` (before anything starts) and :func:`fit` (``TorchTrainer`` with
``RunConfig(storage_path=...)``, ``CheckpointConfig(num_to_keep=...)``, ``FailureConfig(max_failures=...)``).
Worker side: :class:`RayCheckpointer`, which writes a sharded checkpoint (:mod:`infinity_run.checkpoint`) into a
local staging directory on every rank and reports it with ``ray.train.report(..., checkpoint=...)``; Ray merges the
ranks' files into ``<storage_path>/<name>/step_<step>``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from infinity_run.checkpoint import checkpoint_problems, latest_complete, write_checkpoint
from infinity_run.reaper import start_reaper
from infinity_run.tracking import MLflowTracker, flatten, resolve_tracking_uri

logger = logging.getLogger(__name__)

__all__ = ["RayCheckpointer", "fit", "in_job_working_dir", "init_ray", "job_dir_problems", "require_ray"]


def require_ray() -> Any:
    """``ray`` (with Ray Train), or ImportError naming the extra."""
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # read when ray is first imported; see init_ray
    try:
        import ray
        import ray.train
    except ImportError as err:
        raise ImportError("Ray training needs Ray Train: pip install 'infinity-run[ray]' (or a package's train extra)") from err
    return ray


def init_ray(**kwargs: Any) -> Any:
    """``ray.init`` for training: workers run this interpreter's environment. (Ray's uv integration would otherwise
    re-run ``uv run ...`` inside a copy of the working directory on every worker, building a second environment
    per node, or failing with ``uv run --no-sync``.)"""
    ray = require_ray()
    from ray._private import ray_constants

    # ray was perhaps imported before require_ray could set the variable: the constant decides at ray.init
    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] not in ("0", "false")
    if not ray.is_initialized():
        kwargs.setdefault("address", os.environ.get("RAY_ADDRESS") or None)
        ray.init(ignore_reinit_error=True, **kwargs)
        start_reaper(address=kwargs["address"])
    return ray


def in_job_working_dir(cwd: str | Path | None = None) -> bool:
    """True inside the temporary copy of a working dir that Ray makes for a submitted job (deleted afterwards)."""
    parts = Path(cwd or Path.cwd()).resolve().parts
    return "runtime_resources" in parts and any(p.startswith("working_dir_files") for p in parts)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def job_dir_problems(
    *, out_dir: str, storage_path: str = "", tracking_uri: str | None = None, tracked: bool = True,
    cwd: str | Path | None = None,
) -> list[str]:
    """Why a run's results would be lost with the job's working dir (empty: they will not). Outside a Ray job's
    temporary working dir nothing is refused."""
    if not in_job_working_dir(cwd):
        return []
    here = Path(cwd or Path.cwd())
    problems = []
    if not Path(out_dir).is_absolute() or _inside(Path(out_dir), here):
        problems.append(
            f"run.out_dir={out_dir!r} lies in this Ray job's temporary working directory, which is deleted with the "
            "job; set run.out_dir to an absolute path on storage that outlives it (e.g. run.out_dir=/mnt/shared/runs/x)"
        )
    if storage_path and "://" not in storage_path and (not Path(storage_path).is_absolute() or _inside(Path(storage_path), here)):
        problems.append(
            f"ray.storage_path={storage_path!r} lies in the job's temporary working directory; give an absolute "
            "shared path or a cloud URI (s3://..., gs://...)"
        )
    if tracked:
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        if not uri:
            if not Path(out_dir).is_absolute() or _inside(Path(out_dir), here):
                problems.append(
                    "the MLflow store would be an sqlite file in the job's temporary working directory; set "
                    "tracking.tracking_uri (or MLFLOW_TRACKING_URI) to a server or an absolute path outside it"
                )
        elif uri.startswith(("sqlite:///", "file:")):
            local = uri.removeprefix("sqlite:///").removeprefix("file://").removeprefix("file:")
            if not local.startswith("/") or _inside(Path(local), here):
                problems.append(
                    f"the MLflow store {uri} lies in the job's temporary working directory; set tracking.tracking_uri "
                    "(or MLFLOW_TRACKING_URI) to a server or an absolute path outside it"
                )
    return problems


def preflight(config: Any) -> list[str]:
    """What to refuse before Ray starts, for any run config with ``[run]``, ``[tracking]``, ``[ray]`` sections and
    ``per_worker_batch``: a global batch the workers cannot split, results that would die with a job's working dir."""
    problems = []
    try:
        config.per_worker_batch(config.ray.num_workers)
    except ValueError as err:
        problems.append(str(err))
    problems += job_dir_problems(
        out_dir=config.run.out_dir, storage_path=config.ray.storage_path,
        tracking_uri=config.tracking.tracking_uri or None, tracked=config.tracking.kind == "mlflow",
    )  # fmt: skip
    return problems


def default_tracking_uri(explicit: str | None, out_dir: str | Path) -> str:
    """The run's MLflow store (:func:`infinity_run.tracking.resolve_tracking_uri` with the run directory)."""
    return resolve_tracking_uri(explicit, out_dir)


def fit(
    train_loop: Callable[[dict], None],
    loop_config: Mapping[str, Any],
    *,
    name: str,
    num_workers: int,
    storage_path: str,
    use_gpu: bool = False,
    max_failures: int = 0,
    keep: int = 2,
    address: str | None = None,
) -> Any:
    """Run ``train_loop`` on ``num_workers`` Ray Train workers (connecting to ``address`` / ``$RAY_ADDRESS`` or
    starting a local cluster); returns Ray's ``Result`` (``result.checkpoint`` = the last reported checkpoint)."""
    require_ray()
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    init_ray(address=address or os.environ.get("RAY_ADDRESS") or None, log_to_driver=True)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=dict(loop_config),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=keep if keep > 0 else None),
        ),
    )
    return trainer.fit()


def checkpoint_path(checkpoint: Any) -> Path:
    """A local directory holding a Ray ``Checkpoint`` (downloaded first when it lives in cloud storage)."""
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return Path(checkpoint.path)
    return Path(checkpoint.to_directory(tempfile.mkdtemp(prefix="infinity-restore-")))


class RayCheckpointer:
    """Checkpoints of a Ray Train worker: written on every rank into local staging, reported to Ray, resumed from
    ``ray.train.get_checkpoint()``. ``storage_dir`` (``<storage_path>/<name>`` when it is a local or shared path) is
    also searched, so a checkpoint reported just before a worker died, which Ray had not registered yet, is not lost,
    and an incomplete one falls back to the newest complete one (with a warning)."""

    def __init__(self, storage_dir: str | Path | None = None) -> None:
        self.storage_dir = Path(storage_dir) if storage_dir and "://" not in str(storage_dir) else None

    def latest(self) -> Path | None:
        import json

        import ray.train

        candidates = []
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            path = checkpoint_path(checkpoint)
            problems = checkpoint_problems(path)
            if problems:
                logger.warning("Ray's latest checkpoint %s is incomplete (%s)", path, "; ".join(problems))
            else:
                candidates.append(path)
        if self.storage_dir is not None and self.storage_dir.is_dir():
            found = latest_complete(sorted(p for p in self.storage_dir.glob("step_*") if p.is_dir()))
            if found is not None:
                candidates.append(found)

        def step_of(path: Path) -> int:
            return int(json.loads((path / "manifest.json").read_text())["step"])

        return max(candidates, key=step_of) if candidates else None

    def save(self, step: int, model: Any, optimizer: Any, *, meta: dict, rank_state: dict, metrics: dict) -> None:
        import ray.train
        from ray.train import Checkpoint

        staging = Path(tempfile.mkdtemp(prefix="infinity-checkpoint-"))
        try:
            write_checkpoint(staging, model, optimizer, step=step, meta=meta, rank_state=rank_state)
            ray.train.report(
                ray_metrics(metrics), checkpoint=Checkpoint.from_directory(str(staging)),
                checkpoint_dir_name=f"step_{step:07d}",
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return None


def ray_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Metric names as Ray shows them ("/" -> "_")."""
    return {k.replace("/", "_"): float(v) for k, v in metrics.items()}


def worker_tracker(loop_config: Mapping[str, Any]) -> Any:
    """In a Ray Train worker: the MLflow tracker of the driver's run on rank 0, None elsewhere or untracked."""
    import ray.train

    if ray.train.get_context().get_world_rank() != 0 or not loop_config.get("mlflow_run_id"):
        return None
    return MLflowTracker(run_id=loop_config["mlflow_run_id"], tracking_uri=loop_config["tracking_uri"])


def launch(
    train_loop: Callable[[dict], None],
    config: Any,
    *,
    name_prefix: str,
    config_path: str | None = None,
    extra: Mapping[str, Any] | None = None,
    export: Callable[[Path, Path], Path] | None = None,
    log_model: Callable[[Path, Any], None] | None = None,
) -> dict[str, Any]:
    """The driver of a training run on Ray Train, shared by every trainer.

    ``config`` is a :class:`infinity_run.config.RunConfig` with ``[run]``, ``[tracking]`` and ``[ray]`` sections. What
    :func:`preflight` finds is refused before Ray starts; ``run.out_dir`` is made absolute (the workers and a job's
    driver may run elsewhere). Then: create (or, for a resubmitted run with the same ``run.out_dir``, continue) the
    MLflow run, run ``train_loop`` with ``loop_config`` = ``{"config", "mlflow_run_id", "tracking_uri",
    "storage_dir", **extra}`` on the workers of ``[ray]``, export the last checkpoint with ``export(checkpoint,
    out_dir)`` and log the result with ``log_model(model_dir, tracker)`` (default: as the run's ``model`` artifact).
    Returns ``{"metrics", "mlflow_run_id", "checkpoint", "model_dir"}``.
    """
    problems = preflight(config)
    if problems:
        raise ValueError("; ".join(problems))
    out_dir = Path(config.run.out_dir).resolve()
    config = config.with_overrides([f"run.out_dir={json.dumps(str(out_dir))}"])
    tracking, ray_section, keep = config.tracking, config.ray, config.run.keep_checkpoints
    name = f"{name_prefix}-{out_dir.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = ray_section.storage_path or str(out_dir / "ray")
    run_id, uri, tracker = None, None, None
    if tracking.kind == "mlflow":
        id_file = out_dir / "mlflow_run_id"
        tracker = MLflowTracker(
            experiment=tracking.experiment, run_name=tracking.run_name or None,
            tracking_uri=tracking.tracking_uri or None, run_dir=out_dir,
            run_id=id_file.read_text().strip() if id_file.is_file() else None,
            tags={"infinity.workers": ray_section.num_workers, "infinity.strategy": ray_section.strategy},
        )  # fmt: skip
        id_file.write_text(tracker.run_id)
        run_id, uri = tracker.run_id, tracker.tracking_uri
        tracker.log_params(flatten(config.to_dict()))
        if config_path:
            tracker.log_artifact(config_path, "config")
    loop_config = {"config": config.to_dict(), "mlflow_run_id": run_id, "tracking_uri": uri,
                   "storage_dir": f"{storage.rstrip('/')}/{name}", **(extra or {})}  # fmt: skip
    try:
        result = fit(
            train_loop, loop_config, name=name, num_workers=ray_section.num_workers, storage_path=storage,
            use_gpu=ray_section.use_gpu, max_failures=ray_section.max_failures, keep=keep,
            address=ray_section.address or None,
        )  # fmt: skip
    except BaseException:
        if tracker is not None:
            tracker.finish("FAILED")
        raise
    final = checkpoint_path(result.checkpoint) if result.checkpoint is not None else None
    model_dir = export(final, out_dir) if export is not None and final is not None else None
    if tracker is not None:
        if model_dir is not None:
            if log_model is not None:
                log_model(model_dir, tracker)
            else:
                tracker.log_artifact(model_dir, "model")
        tracker.finish()
    return {"metrics": dict(result.metrics or {}), "mlflow_run_id": run_id, "checkpoint": final, "model_dir": model_dir}
