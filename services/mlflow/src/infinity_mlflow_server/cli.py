"""``infinity-mlflow-server``: start the project's MLflow tracking server in the foreground."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from .server import ServerConfig, start_server


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infinity-mlflow-server",
        description="Start an MLflow tracking server (loopback, sqlite backend, proxied local artifact store). "
        "Clients log to it with MLFLOW_TRACKING_URI=http://HOST:PORT.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="TCP port (default 5000)")
    parser.add_argument("--root", type=Path, default=Path("mlflow-data"), help="data directory (default ./mlflow-data)")
    parser.add_argument(
        "--backend-store-uri", default=None, help="run store URI, e.g. postgresql://user:pw@db:5432/mlflow"
    )
    parser.add_argument("--artifacts-destination", default=None, help="artifact store, e.g. s3://bucket/mlflow")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    parser.add_argument("--allowed-host", action="append", default=[], help="extra Host header to accept (repeatable)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the server to come up")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the server, block until it exits or Ctrl-C; return an exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = ServerConfig(
            host=args.host, port=args.port, root=args.root, backend_store_uri=args.backend_store_uri,
            artifacts_destination=args.artifacts_destination, workers=args.workers, allowed_hosts=tuple(args.allowed_host),
        )  # fmt: skip
        server = start_server(config, timeout_s=args.timeout)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"infinity-mlflow-server: {err}".splitlines()[0], file=sys.stderr)
        return 2
    print(f"MLflow tracking server ready at {server.url}  (export MLFLOW_TRACKING_URI={server.url})", file=sys.stderr)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM stops the server like Ctrl-C
    try:
        return int(server.process.wait())
    except KeyboardInterrupt:
        server.stop()
        return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
