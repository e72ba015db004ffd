"""Start an MLflow tracking server for the project: loopback, sqlite backend, local proxied artifact store.

The defaults suit one machine (a developer box or a single head node): ``<root>/mlflow.db`` holds runs and metrics,
``<root>/artifacts`` holds artifacts, and the server proxies artifact uploads/downloads (``--serve-artifacts``) so a
client never needs direct access to the artifact directory. Teams point ``backend_store_uri`` at Postgres and
``artifacts_destination`` at object storage instead (see the README); the server process is the same.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["MlflowServer", "ServerConfig", "build_command", "free_port", "start_server"]

logger = logging.getLogger(__name__)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Run stores MLflow's server accepts (a driver may follow "+", e.g. postgresql+psycopg2://).
STORE_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "mssql", "file"})


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Where the tracking server listens and stores its data.

    Attributes:
        host: Interface to bind. Loopback by default; binding anything else exposes an unauthenticated server.
        port: TCP port (1-65535).
        root: Directory for the default sqlite database and artifact store (created if missing).
        backend_store_uri: SQLAlchemy URI of the run store; ``None`` -> ``sqlite:///<root>/mlflow.db``.
            Teams: ``postgresql://user:password@db-host:5432/mlflow``.
        artifacts_destination: Where proxied artifacts are written; ``None`` -> ``<root>/artifacts``.
            Teams: ``s3://bucket/mlflow`` (or ``gs://``, ``wasbs://``), credentials from the server's environment.
        workers: Number of server worker processes.
        allowed_hosts: Extra ``Host`` header values to accept (needed when reached by a DNS name behind a proxy).
        enable_jobs: Run MLflow's background job workers (GenAI scorers, periodic tasks). Off by default: the
            project only tracks runs, and the workers are seven extra processes.
    """

    host: str = "127.0.0.1"
    port: int = 5000
    root: Path = Path("mlflow-data")
    backend_store_uri: str | None = None
    artifacts_destination: str | None = None
    workers: int = 1
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)
    enable_jobs: bool = False

    def __post_init__(self) -> None:
        if any(p.is_file() for p in (Path(self.root), *Path(self.root).parents)):
            raise ValueError(f"root {self.root} cannot be a data directory: a part of that path is a file")
        if not self.host or any(c.isspace() for c in self.host):
            raise ValueError(f"host must be an interface name or address such as 127.0.0.1, got {self.host!r}")
        if not 1 <= int(self.port) <= 65535:
            raise ValueError(f"port must be in 1..65535, got {self.port}; pick a free port, e.g. 5000")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        scheme = (self.backend_store_uri or "").split("://", 1)[0].split("+", 1)[0]
        if self.backend_store_uri is not None and ("://" not in self.backend_store_uri or scheme not in STORE_SCHEMES):
            raise ValueError(
                f"backend_store_uri must be a SQLAlchemy URI such as sqlite:///path/mlflow.db or "
                f"postgresql://user:pw@host:5432/mlflow, got {self.backend_store_uri!r}"
            )
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "allowed_hosts", tuple(self.allowed_hosts))

    @property
    def url(self) -> str:
        """The tracking URI clients use (``MLFLOW_TRACKING_URI``)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def resolved_backend_store_uri(self) -> str:
        """The run store URI actually used."""
        if self.backend_store_uri is not None:
            return self.backend_store_uri
        return f"sqlite:///{(self.root / 'mlflow.db').resolve()}"

    @property
    def resolved_artifacts_destination(self) -> str:
        """The artifact store actually used."""
        if self.artifacts_destination is not None:
            return self.artifacts_destination
        return str((self.root / "artifacts").resolve())


def build_command(config: ServerConfig) -> list[str]:
    """The ``mlflow server`` command line for ``config`` (run with the current interpreter)."""
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", config.resolved_backend_store_uri,
        "--artifacts-destination", config.resolved_artifacts_destination,
        "--serve-artifacts",
        "--host", config.host,
        "--port", str(config.port),
        "--workers", str(config.workers),
    ]  # fmt: skip
    if config.allowed_hosts:
        local = ["localhost", "127.0.0.1", f"localhost:{config.port}", f"127.0.0.1:{config.port}"]
        cmd += ["--allowed-hosts", ",".join([*local, *config.allowed_hosts])]
    return cmd


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MlflowServer:
    """A running tracking server process; a context manager that stops it on exit."""

    def __init__(self, config: ServerConfig, process: subprocess.Popen[bytes], log_path: Path | None) -> None:
        self.config = config
        self.process = process
        self.log_path = log_path

    @property
    def url(self) -> str:
        """Tracking URI of this server."""
        return self.config.url

    def log_tail(self, num_chars: int = 4000) -> str:
        """The end of the server's log file (empty when logging to the console)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-num_chars:]

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until ``GET /health`` answers 200; raise ``RuntimeError`` with the log tail otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with code {self.process.returncode} before becoming ready:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"mlflow server at {self.url} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> int:
        """Terminate the server (SIGTERM to its process group, then SIGKILL) and return its exit code."""
        if self.process.poll() is None:
            _signal_group(self.process, kill=False)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, kill=True)
                self.process.wait(timeout=timeout_s)
        return int(self.process.returncode)

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], *, kill: bool) -> None:
    import signal

    sig = signal.SIGKILL if kill else signal.SIGTERM
    try:
        os.killpg(process.pid, sig)  # the server forks uvicorn workers; stop the whole group we created
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


def start_server(
    config: ServerConfig, *, log_path: Path | None = None, wait: bool = True, timeout_s: float = 120.0
) -> MlflowServer:
    """Start ``mlflow server`` for ``config`` in its own process group.

    Args:
        config: Where to listen and store data; ``config.root`` is created.
        log_path: File receiving the server's stdout/stderr; ``None`` inherits the console.
        wait: Block until the server answers ``/health``.
        timeout_s: How long to wait for readiness.
    """
    if not _is_loopback(config.host):
        logger.warning(
            "binding the MLflow server to %s exposes it beyond this machine without authentication; "
            "put it behind an authenticating proxy or use --app-name basic-auth",
            config.host,
        )
    config.root.mkdir(parents=True, exist_ok=True)
    if config.artifacts_destination is None:
        Path(config.resolved_artifacts_destination).mkdir(parents=True, exist_ok=True)
    cmd = build_command(config)
    logger.info("starting MLflow tracking server: %s", " ".join(cmd))
    stdout = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 (owned by the child)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if config.enable_jobs else "false"}
    try:
        process = subprocess.Popen(
            cmd,
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout else None,
            start_new_session=True,
            cwd=config.root,
            env=env,
        )
    finally:
        if stdout is not None:
            stdout.close()
    server = MlflowServer(config, process, log_path)
    if wait:
        try:
            server.wait_ready(timeout_s)
        except BaseException:
            server.stop()
            raise
    return server
