"""``infinity-data`` command line: thin -- parse, build the config, call one library function, return an exit code.

    infinity-data curate --config configs/data/local.toml [section.key=value ...]
    infinity-data demo-shards /tmp/demo_in
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infinity-data", description="Curate image-text pairs for Infinity training.")
    sub = parser.add_subparsers(dest="command", required=True)
    curate = sub.add_parser("curate", help="run or resume a curation job")
    curate.add_argument("--config", required=True, help="TOML run config, e.g. configs/data/local.toml")
    curate.add_argument("overrides", nargs="*", help="dotted overrides, e.g. output.path=/tmp/out filters.ocr.max_text_area=0.1")
    curate.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    demo = sub.add_parser("demo-shards", help="write synthetic webdataset shards (clean + every failure case) to try the curator")
    demo.add_argument("folder", help="where to write shard-00000.tar ...")
    demo.add_argument("--shards", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (errors: one line on stderr, exit code 2)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo-shards":
        from .testing import make_synthetic_shards

        expected = make_synthetic_shards(args.folder, num_shards=args.shards, seed=args.seed)
        print(f"{args.folder}: {args.shards} shards, {len(expected)} samples")
        return 0
    from .config import load_config
    from .runner import curate

    try:
        config = load_config(args.config, args.overrides)
        if args.quiet:
            from dataclasses import replace

            config = replace(config, progress=False)
        result = curate(config)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"infinity-data: error: {exc}", file=sys.stderr)
        return 2
    totals = result.report["totals"]
    print(
        f"{result.output}: {result.shards_total} shards ({result.shards_processed} processed, {result.shards_skipped} "
        f"already committed); in {totals['in']} kept {totals['kept']} dropped {totals['dropped']} "
        f"errors {totals['error_count']}; report {result.output}/report/report.md"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
