"""``python -m bsq_tokenizer.train CONFIG.toml [section.key=value ...] [--ray]``: train the tokenizer in-process or
on Ray Train (the AR trainer's conventions: TOML + overrides, sharded checkpoints, resume, MLflow)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, build the config, run; errors print one line to stderr and return 2 (``-v`` shows tracebacks)."""
    parser = argparse.ArgumentParser(prog="python -m bsq_tokenizer.train", description=__doc__)
    parser.add_argument("config", help="TOML run config (see configs/train/tokenizer_*.toml)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as train.lr=1e-3 train.steps=100")
    parser.add_argument("--ray", action="store_true", help="run on Ray Train (ray.num_workers workers)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, ImportError, OSError) as err:
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from bsq_tokenizer.train.config import load_run_config

    config = load_run_config(args.config, args.overrides)
    if args.ray:
        from bsq_tokenizer.train.ray_entry import run_ray

        result = run_ray(config, config_path=args.config)
        print(f"finished at step {config.train.steps}: checkpoint {result['checkpoint']}, tokenizer "
              f"{result['model_dir']}, MLflow run {result['mlflow_run_id']}")  # fmt: skip
        return 0
    from infinity_run.tracking import make_tracker

    from bsq_tokenizer.train.ray_entry import build_trainer

    tracker = None
    if config.tracking.kind == "mlflow":
        tracker = make_tracker(
            "mlflow", experiment=config.tracking.experiment, run_name=config.tracking.run_name or None,
            tracking_uri=config.tracking.tracking_uri or None, run_dir=config.run.out_dir,
        )  # fmt: skip
        tracker.log_artifact(args.config, "config")
    trainer = build_trainer(config, tracker=tracker)
    trainer.fit()
    if tracker is not None:
        tracker.finish()
    print(f"finished at step {trainer.step}; tokenizer in {trainer.out_dir / 'tokenizer'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
