"""The one experiment-tracking integration: a do-nothing :class:`Tracker`, or MLflow when a run is tracked.

Which MLflow store (one rule for every package): an explicit ``tracking_uri`` (config or flag) >
``$MLFLOW_TRACKING_URI`` > ``sqlite:///<run directory>/mlflow.db``. A run records, besides its params and metrics:
the user, the source (entry point) and git commit as tags; system metrics (CPU, memory, disk, GPU) when psutil is
installed; images with their step (MLflow's step slider); and, on resume, the params that changed (under
``resume.<step>.<name>``), so params never go stale. Experiments are created in MLflow's model-training view.

MLflow is imported only when an :class:`MLflowTracker` is made (``pip install 'infinity-run[mlflow]'``).
"""

from __future__ import annotations

import getpass
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["CommittedTracker", "MLflowTracker", "Tracker", "flatten", "make_tracker", "resolve_tracking_uri", "tracker_for"]

# MLflow 3 opens an experiment tagged with this kind in its classic (model-training) view, not the GenAI one.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def resolve_tracking_uri(explicit: str | None = None, run_dir: str | Path | None = None) -> str:
    """The MLflow store: ``explicit`` > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///<run_dir>/mlflow.db`` (run_dir
    defaults to the working directory)."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    base = Path(run_dir) if run_dir is not None else Path.cwd()
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{base.resolve() / 'mlflow.db'}"


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


def git_commit(path: str | Path | None = None) -> str | None:
    """The git commit of the checkout holding ``path`` (default: the working directory), or None."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path or Path.cwd(), capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


class Tracker:
    """Interface and no-op implementation."""

    run_id: str | None = None
    tracking_uri: str | None = None

    def log_params(self, params: Mapping[str, Any], *, step: int = 0) -> None:
        """Record run parameters (a flattened config); at ``step`` > 0 changed values are recorded as resumes."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record scalar metrics at ``step``."""

    def log_image(self, image: Any, name: str, step: int) -> None:
        """Record an image (PIL image or HWC uint8 array) at ``step``."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Record a file or directory."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Record tags."""

    def finish(self, status: str = "FINISHED") -> None:
        """Close the run."""


class MLflowTracker(Tracker):
    """Logs one run to MLflow; ``run_id`` continues an existing run (a restarted job, a resumed training).

    Args:
        experiment: created if missing (tagged for the model-training view).
        run_name / tags: of a new run.
        tracking_uri / run_dir: the store, by :func:`resolve_tracking_uri`.
        run_id: continue this run instead of creating one.
        parent_run_id: make the new run a child (nested run) of this one.
        system_metrics: sample CPU/memory/disk/GPU into ``system/*`` metrics (needs psutil).
    """

    def __init__(
        self,
        *,
        experiment: str = "infinity",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        run_dir: str | Path | None = None,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        system_metrics: bool = True,
    ) -> None:
        try:
            import mlflow
        except ImportError as err:
            raise ImportError(
                "MLflow tracking needs MLflow: pip install 'infinity-run[mlflow]' (or a package's train/mlflow extra)"
            ) from err
        self._mlflow = mlflow
        self.tracking_uri = resolve_tracking_uri(tracking_uri, run_dir)
        self.client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        if run_id is None:
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                experiment_id = self.client.create_experiment(
                    experiment, artifact_location=_artifact_location(self.tracking_uri),
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                )  # fmt: skip
            else:
                experiment_id = found.experiment_id
            run_tags = {
                "mlflow.user": _user(),
                "mlflow.source.name": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500] or "python",
                "mlflow.source.type": "JOB",
            }
            commit = git_commit()
            if commit:
                run_tags["mlflow.source.git.commit"] = commit
            if parent_run_id:
                run_tags["mlflow.parentRunId"] = parent_run_id
            run_tags.update({k: str(v) for k, v in (tags or {}).items()})
            run_id = self.client.create_run(experiment_id, run_name=run_name, tags=run_tags).info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        self._monitor = self._start_system_metrics() if system_metrics else None
        logger.info("MLflow run %s at %s", run_id, self.tracking_uri)

    def _start_system_metrics(self) -> Any:
        try:
            import psutil  # noqa: F401  (the monitor needs it)
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        except ImportError:
            logger.info("psutil is not installed: no system metrics for this run")
            return None
        interval = float(os.environ.get("INFINITY_SYSTEM_METRICS_INTERVAL", "10"))
        monitor = SystemMetricsMonitor(
            self.run_id, sampling_interval=interval, resume_logging=True, tracking_uri=self.tracking_uri
        )
        monitor.start()
        return monitor

    def child(self, run_name: str, tags: Mapping[str, Any] | None = None) -> MLflowTracker:
        """A new nested run under this one (same store and experiment; system metrics stay on the parent)."""
        experiment = self.client.get_experiment(self.client.get_run(self.run_id).info.experiment_id).name
        return MLflowTracker(experiment=experiment, run_name=run_name, tracking_uri=self.tracking_uri,
                             tags=tags, parent_run_id=self.run_id, system_metrics=False)  # fmt: skip

    @contextmanager
    def active(self) -> Iterator[Any]:
        """This run as MLflow's active run, for the fluent ``mlflow.*`` APIs this class does not wrap (datasets,
        tables, logged models); yields the ``mlflow`` module. Leaving the block ends the fluent run; the run's final
        status is still the one :meth:`finish` sets."""
        mlflow = self._mlflow
        # mlflow.set_tracking_uri also writes $MLFLOW_TRACKING_URI (and unsetting it deletes the variable), so the
        # caller's environment, which mlflow's own global follows, is put back afterwards.
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            with mlflow.start_run(run_id=self.run_id):
                yield mlflow
        finally:
            mlflow.set_tracking_uri(None)
            if previous is not None:
                os.environ["MLFLOW_TRACKING_URI"] = previous

    def log_params(self, params: Mapping[str, Any], *, step: int = 0) -> None:
        existing = self.client.get_run(self.run_id).data.params
        fresh = {k: _param(v) for k, v in params.items() if k not in existing}
        changed = {
            f"resume.{step}.{k}": _param(v)
            for k, v in params.items()
            if k in existing and existing[k] != _param(v)
        }
        items = [self._mlflow.entities.Param(k, v) for k, v in {**fresh, **changed}.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])
        if changed:
            logger.info("params changed at step %d: %s", step, sorted(changed))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [self._mlflow.entities.Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start : start + 500])

    def log_image(self, image: Any, name: str, step: int) -> None:
        import numpy as np
        from PIL import Image

        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image, dtype=np.uint8))
        self.client.log_image(self.run_id, image, key=name, step=int(step), synchronous=True)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def finish(self, status: str = "FINISHED") -> None:
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
        self.client.set_terminated(self.run_id, status=status)


class CommittedTracker(Tracker):
    """Holds metrics and images until :meth:`commit` (called when a checkpoint covering their steps is written), so
    a run restarted from its last checkpoint never logs a step twice; params, tags and artifacts pass through."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.run_id, self.tracking_uri = tracker.run_id, tracker.tracking_uri
        self._metrics: list[tuple[int, dict[str, float]]] = []
        self._images: list[tuple[int, str, Any]] = []

    def log_params(self, params: Mapping[str, Any], *, step: int = 0) -> None:
        self.tracker.log_params(params, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._metrics.append((step, dict(metrics)))

    def log_image(self, image: Any, name: str, step: int) -> None:
        self._images.append((step, name, image))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.tracker.log_artifact(path, artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.tracker.set_tags(tags)

    @property
    def pending(self) -> list[tuple[int, dict[str, float]]]:
        """Metrics not yet committed, oldest first."""
        return list(self._metrics)

    def commit(self) -> None:
        """Hand everything held so far to the wrapped tracker."""
        for step, metrics in self._metrics:
            self.tracker.log_metrics(metrics, step)
        for step, name, image in self._images:
            self.tracker.log_image(image, name, step)
        self._metrics, self._images = [], []

    def finish(self, status: str = "FINISHED") -> None:
        self.commit()
        self.tracker.finish(status)


def _artifact_location(tracking_uri: str) -> str | None:
    """``<folder of the sqlite file>/mlartifacts`` for a sqlite store (MLflow's default would be ``./mlruns`` of
    whatever the working directory is); None (the server's or MLflow's default) otherwise."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return (Path(tracking_uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()


def _param(value: Any) -> str:
    return str(value)[:6000]


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def tracker_for(tracking: Any, run_dir: str | Path, config_path: str | Path | None = None) -> Tracker:
    """The tracker a ``[tracking]`` section (:class:`infinity_run.config.TrackingSection`) asks for, with the run's
    config file logged as an artifact; a no-op :class:`Tracker` for ``kind = "none"``."""
    if tracking.kind == "none":
        return Tracker()
    tracker = make_tracker(
        tracking.kind, experiment=tracking.experiment, run_name=tracking.run_name or None,
        tracking_uri=tracking.tracking_uri or None, run_dir=run_dir,
    )  # fmt: skip
    if config_path is not None:
        tracker.log_artifact(config_path, "config")
    return tracker


def make_tracker(kind: str, **kwargs: Any) -> Tracker:
    """``"none"`` -> :class:`Tracker`; ``"mlflow"`` -> :class:`MLflowTracker` (kwargs passed on)."""
    if kind == "none":
        return Tracker()
    if kind == "mlflow":
        return MLflowTracker(**kwargs)
    raise ValueError(f"unknown tracker {kind!r}; use 'none' or 'mlflow'")
