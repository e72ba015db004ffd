"""``python -m bitwise_ar.train CONFIG.toml [section.key=value ...] [--ray]``: train in-process or on Ray Train."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from infinity_run.entry import train_main

from bitwise_ar.train.config import TrainConfig, load_config


def _build_trainer(config: TrainConfig, *, tracker: Any) -> Any:
    from bitwise_ar.train.trainer import ARTrainer  # torch and the model: loaded once the config is valid

    return ARTrainer(config, tracker=tracker)


def _run_ray(config: TrainConfig, *, config_path: str) -> dict[str, Any]:
    from bitwise_ar.train.ray_entry import run_ray

    return run_ray(config, config_path=config_path)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, build the config, run; errors print one line to stderr and return 2 (``-v`` shows tracebacks)."""
    return train_main(
        argv, prog="python -m bitwise_ar.train", description=__doc__, load_config=load_config,
        build_trainer=_build_trainer, run_ray=_run_ray, product="pipeline",
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
