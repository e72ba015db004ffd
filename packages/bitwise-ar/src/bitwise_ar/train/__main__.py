"""``python -m bitwise_ar.train CONFIG.toml [section.key=value ...] [--ray]``: train in-process or on Ray Train."""

from __future__ import annotations

from collections.abc import Sequence

from infinity_run.entry import train_main
from infinity_run.tracking import tracker_for

from bitwise_ar.train.config import TrainConfig, load_config


def _local(config: TrainConfig, config_path: str) -> str:
    from bitwise_ar.train.trainer import ARTrainer  # torch and the model: loaded once the config is valid

    tracker = tracker_for(config.tracking, config.run.out_dir, config_path)
    trainer = ARTrainer(config, tracker=tracker)
    trainer.fit()
    tracker.finish()
    return f"finished at step {trainer.step}; checkpoints in {trainer.out_dir / 'checkpoints'}"


def _ray(config: TrainConfig, config_path: str) -> str:
    from bitwise_ar.train.ray_entry import run_ray

    result = run_ray(config, config_path=config_path)
    return (
        f"finished at step {config.train.steps}: checkpoint {result['checkpoint']}, pipeline {result['model_dir']}, "
        f"MLflow run {result['mlflow_run_id']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, build the config, run; errors print one line to stderr and return 2 (``-v`` shows tracebacks)."""
    return train_main(
        argv, prog="python -m bitwise_ar.train", description=__doc__, load_config=load_config, run_local=_local,
        run_ray=_ray,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
