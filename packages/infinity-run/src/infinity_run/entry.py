"""The command line of a training entry point (``python -m PACKAGE.train CONFIG.toml [key=value ...] [--ray]``),
shared by every trainer: parse, load the config, run in-process or on Ray Train, one-line errors (``-v`` for the
traceback), exit code 2 on bad input."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .tracking import tracker_for

__all__ = ["parse_with_overrides", "train_main"]


def parse_with_overrides(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, *, takes_overrides: Callable[[Any], bool] | None = None
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` for a CLI with a ``nargs="*"`` positional ``overrides``, which may then come before
    or after the options: argparse fills such a positional only once, so the ones after an option come back as unknown
    arguments and are appended here. ``takes_overrides(args)`` is False for a subcommand without overrides."""
    args, extra = parser.parse_known_args(argv)
    accepts = takes_overrides is None or takes_overrides(args)
    stray = [item for item in extra if item.startswith("-") or not accepts]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if accepts:
        args.overrides = [*args.overrides, *extra]
    return args


def train_main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    load_config: Callable[[str, list[str]], Any],
    build_trainer: Callable[..., Any],
    run_ray: Callable[..., Mapping[str, Any]],
    product: str,
) -> int:
    """Parse ``CONFIG [overrides] [--ray] [-v]`` and train.

    In-process: ``build_trainer(config, tracker=...)`` gets the run's tracker (:func:`infinity_run.tracking.tracker_for`)
    and must return an object with ``fit()``, ``step`` and ``out_dir``. With ``--ray``: ``run_ray(config,
    config_path=...)`` returns a mapping with ``checkpoint``, ``model_dir`` and ``mlflow_run_id``; ``product`` names
    what ``model_dir`` holds ("pipeline", "tokenizer"). ValueError, FileNotFoundError, ImportError and OSError become
    one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("config", help="TOML run config (see configs/train/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as train.steps=100 run.out_dir=/x")
    parser.add_argument("--ray", action="store_true", help="run on Ray Train (ray.num_workers workers)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(args.config, list(args.overrides))
        if args.ray:
            result = run_ray(config, config_path=args.config)
            print(
                f"finished at step {config.train.steps}: checkpoint {result['checkpoint']}, "
                f"{product} {result['model_dir']}, MLflow run {result['mlflow_run_id']}"
            )
        else:
            tracker = tracker_for(config.tracking, config.run.out_dir, args.config)
            trainer = build_trainer(config, tracker=tracker)
            trainer.fit()
            tracker.finish()
            print(f"finished at step {trainer.step}; outputs in {trainer.out_dir}")
        return 0
    except (ValueError, FileNotFoundError, ImportError, OSError) as err:
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
