"""Experiment tracking: a do-nothing tracker by default, MLflow when asked (imported only here, only then).

The MLflow store defaults to a local SQLite file (``sqlite:///<cwd>/mlflow.db``, no server needed);
``$MLFLOW_TRACKING_URI`` or an explicit ``tracking_uri`` points it elsewhere (e.g. ``http://mlflow:5000``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and tuples become strings)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = str(list(value))
        else:
            out[name] = value
    return out


class Tracker:
    """Interface and no-op implementation."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record run parameters (flattened config)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record scalar metrics at ``step``."""

    def log_image(self, image: Any, name: str, step: int) -> None:
        """Record an image (PIL image or HWC uint8 array) as an artifact."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Record a file or directory."""

    def finish(self, status: str = "FINISHED") -> None:
        """Close the run."""


class MLflowTracker(Tracker):
    """Logs to MLflow. ``run_id`` resumes an existing run (used when a training job restarts)."""

    def __init__(
        self,
        *,
        experiment: str = "infinity",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        run_id: str | None = None,
    ) -> None:
        try:
            import mlflow
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("MLflow tracking needs the train extra: pip install 'bsq-tokenizer[train]'") from err
        self._mlflow = mlflow
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        self.tracking_uri = uri
        if run_id is None:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        self.run_id = run_id
        logger.info("MLflow run %s at %s", run_id, uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        existing = self.client.get_run(self.run_id).data.params
        fresh = [self._mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for start in range(0, len(fresh), 100):
            self.client.log_batch(self.run_id, params=fresh[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import time

        now = int(time.time() * 1000)
        items = [self._mlflow.entities.Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start : start + 500])

    def log_image(self, image: Any, name: str, step: int) -> None:
        from PIL import Image

        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image, dtype=np.uint8))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}_step{step:07d}.png"
            image.save(path)
            self.client.log_artifact(self.run_id, str(path), artifact_path="images")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def make_tracker(kind: str, **kwargs: Any) -> Tracker:
    """``"none"`` -> :class:`Tracker`; ``"mlflow"`` -> :class:`MLflowTracker` (kwargs passed on)."""
    if kind == "none":
        return Tracker()
    if kind == "mlflow":
        return MLflowTracker(**kwargs)
    raise ValueError(f"unknown tracker {kind!r}; use 'none' or 'mlflow'")


def image_grid(images_B3HW: Any, columns: int = 8) -> np.ndarray:
    """A (rows*H, columns*W, 3) uint8 grid from images in [-1, 1] (torch tensor)."""
    x = ((images_B3HW.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    b, _, h, w = x.shape
    columns = max(1, min(columns, b))
    rows = (b + columns - 1) // columns
    grid = np.full((rows * h, columns * w, 3), 255, dtype=np.uint8)
    for i in range(b):
        r, c = divmod(i, columns)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = x[i].transpose(1, 2, 0)
    return grid
