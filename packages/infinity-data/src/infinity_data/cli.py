"""``infinity-data`` command line: thin -- parse, build the config, call one library function, return an exit code.

    infinity-data curate --config configs/data/local.toml [section.key=value ...] [--quiet]
    infinity-data demo-shards /tmp/demo_in

Overrides may come before or after the options. Errors are one line on stderr that names the file or setting, exit
code 2; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace

from infinity_run.entry import parse_with_overrides

from .config import load_config
from .runner import curate
from .testing import make_synthetic_shards

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infinity-data", description="Curate image-text pairs for Infinity training.")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    curate_cmd = sub.add_parser("curate", help="run or resume a curation job")
    curate_cmd.add_argument("--config", required=True, help="TOML run config, e.g. configs/data/local.toml")
    curate_cmd.add_argument("overrides", nargs="*", help="dotted overrides, e.g. output.path=/tmp/out filters.ocr.max_text_area=0.1")
    curate_cmd.add_argument("--quiet", action="store_true", help="no progress bars, warnings only (Ray's too)")
    curate_cmd.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                            help="print the traceback of an error")  # fmt: skip
    demo = sub.add_parser("demo-shards", help="write synthetic webdataset shards (clean + every failure case) to try the curator")
    demo.add_argument("folder", help="where to write shard-00000.tar ...")
    demo.add_argument("--shards", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (errors: one line on stderr, exit code 2)."""
    args = parse_with_overrides(_parser(), argv, takes_overrides=lambda a: a.command == "curate")
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo-shards":
            expected = make_synthetic_shards(args.folder, num_shards=args.shards, seed=args.seed)
            print(f"{args.folder}: {args.shards} shards, {len(expected)} samples")
            return 0
        config = load_config(args.config, args.overrides)
        if quiet:
            config = replace(config, progress=False, ray=replace(config.ray, log_level="warning"))
        result = curate(config)
    except Exception as exc:  # one line, no traceback (unless -v): every failure of a run names what to fix
        if args.verbose:
            logging.getLogger(__name__).exception("curation failed")
        message = str(exc) if isinstance(exc, FileNotFoundError | ValueError | ImportError) else _describe(exc)
        print(f"infinity-data: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    totals = result.report["totals"]
    print(
        f"{result.output}: {result.shards_total} shards ({result.shards_processed} processed, {result.shards_skipped} "
        f"already committed); in {totals['in']} kept {totals['kept']} dropped {totals['dropped']} "
        f"errors {totals['error_count']}; report {result.output}/report/report.md"
    )
    return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        reason = exc.strerror or type(exc).__name__
        return f"{exc.filename}: {reason} (check that the path is a writable directory on a disk with free space)"
    return f"{type(exc).__name__}: {exc} (run with -v for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
