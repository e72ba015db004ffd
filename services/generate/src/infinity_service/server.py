"""Run the app with uvicorn: in the foreground (the CLI) or on a background thread (tests, benchmarks)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["free_port", "run_in_thread", "serve_forever"]

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _uvicorn_config(app: Any, host: str, port: int, log_level: str) -> Any:
    import uvicorn

    # Request logs come from the app's own JSON access logger; uvicorn's would duplicate them.
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, timeout_keep_alive=30,
                          limit_concurrency=1024, lifespan="on")  # fmt: skip


def serve_forever(app: Any, host: str, port: int, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM)."""
    import uvicorn

    uvicorn.Server(_uvicorn_config(app, host, port, log_level)).run()


@contextlib.contextmanager
def run_in_thread(app: Any, host: str = "127.0.0.1", port: int | None = None, *, timeout_s: float = 120.0,
                  log_level: str = "warning") -> Iterator[str]:  # fmt: skip
    """Serve ``app`` on a background thread; yields the base URL; shuts down on exit."""
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(_uvicorn_config(app, host, port, log_level))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"uvicorn on {host}:{port} exited during startup (see the log)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn on {host}:{port} not started after {timeout_s:.0f} s")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
