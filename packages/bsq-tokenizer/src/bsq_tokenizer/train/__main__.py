"""``python -m bsq_tokenizer.train CONFIG.toml [section.key=value ...] [--ray]``: train the tokenizer in-process or
on Ray Train (the AR trainer's conventions: TOML + overrides, sharded checkpoints, resume, MLflow)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from infinity_run.entry import train_main

from bsq_tokenizer.train.config import load_run_config


def _build_trainer(config: Any, *, tracker: Any) -> Any:
    from bsq_tokenizer.train.ray_entry import build_trainer  # torch and the model: loaded once the config is valid

    return build_trainer(config, tracker=tracker)


def _run_ray(config: Any, *, config_path: str) -> dict[str, Any]:
    from bsq_tokenizer.train.ray_entry import run_ray

    return run_ray(config, config_path=config_path)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, build the config, run; errors print one line to stderr and return 2 (``-v`` shows tracebacks)."""
    return train_main(
        argv, prog="python -m bsq_tokenizer.train", description=__doc__, load_config=load_run_config,
        build_trainer=_build_trainer, run_ray=_run_ray, product="tokenizer",
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
