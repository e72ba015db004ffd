"""The command line of a training entry point (``python -m PACKAGE.train CONFIG.toml [key=value ...] [--ray]``),
shared by every trainer: parse, load the config, run in-process or on Ray Train, one-line errors (``-v`` for the
traceback), exit code 2 on bad input."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

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
    run_local: Callable[[Any, str], str],
    run_ray: Callable[[Any, str], str],
) -> int:
    """Parse ``CONFIG [overrides] [--ray] [-v]``, then ``run_ray(config, path)`` or ``run_local(config, path)``
    (each returns the line to print when done). ValueError, FileNotFoundError, ImportError and OSError become one
    line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("config", help="TOML run config (see configs/train/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as train.steps=100 run.out_dir=/x")
    parser.add_argument("--ray", action="store_true", help="run on Ray Train (ray.num_workers workers)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(args.config, list(args.overrides))
        print((run_ray if args.ray else run_local)(config, args.config))
        return 0
    except (ValueError, FileNotFoundError, ImportError, OSError) as err:
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
