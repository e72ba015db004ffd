"""Run infrastructure shared by every Infinity package.

* :mod:`infinity_run.config` — frozen dataclass run configs read from TOML with ``section.key=value`` overrides
  (one syntax, one meaning everywhere); standard library only.
* :mod:`infinity_run.tracking` — the one MLflow integration (explicit URI > ``$MLFLOW_TRACKING_URI`` > a local store
  under the run directory); standard library only, MLflow imported when a run is tracked.
* :mod:`infinity_run.checkpoint` — sharded checkpoints with ``torch.distributed.checkpoint`` (needs torch).
* :mod:`infinity_run.distributed` — process-group helpers: global means, rank-aware sharding (needs torch).
* :mod:`infinity_run.ray_train` — launching a training loop on Ray Train with checkpoints that survive the job.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
