"""``python -m bsq_tokenizer.train CONFIG.toml [section.key=value ...] [--ray]``: train the tokenizer in-process or
on Ray Train (the AR trainer's conventions: TOML + overrides, sharded checkpoints, resume, MLflow)."""

from __future__ import annotations

from collections.abc import Sequence

from infinity_run.entry import train_main
from infinity_run.tracking import tracker_for

from bsq_tokenizer.train.config import TokenizerRunConfig, load_run_config


def _local(config: TokenizerRunConfig, config_path: str) -> str:
    from bsq_tokenizer.train.ray_entry import build_trainer

    tracker = tracker_for(config.tracking, config.run.out_dir, config_path)
    trainer = build_trainer(config, tracker=tracker)
    trainer.fit()
    tracker.finish()
    return f"finished at step {trainer.step}; tokenizer in {trainer.out_dir / 'tokenizer'}"


def _ray(config: TokenizerRunConfig, config_path: str) -> str:
    from bsq_tokenizer.train.ray_entry import run_ray

    result = run_ray(config, config_path=config_path)
    return (
        f"finished at step {config.train.steps}: checkpoint {result['checkpoint']}, tokenizer {result['model_dir']}, "
        f"MLflow run {result['mlflow_run_id']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, build the config, run; errors print one line to stderr and return 2 (``-v`` shows tracebacks)."""
    return train_main(
        argv, prog="python -m bsq_tokenizer.train", description=__doc__, load_config=load_run_config,
        run_local=_local, run_ray=_ray,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
