"""A throw-away local Ray head node (``ray start --head --block``) for tests and laptops.

``ray stop`` kills every Ray process of the user on the machine, including clusters that other people or other
test runs started. This helper instead owns exactly what it started: ``ray start --block`` stays in the foreground
and tears its node down on SIGTERM, and a final sweep ends any process still holding this head's private temp dir.
Token authentication is on, with a fresh token written inside that temp dir (the user's ``~/.ray`` is not touched).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["LocalRayHead", "free_port"]

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalRayHead:
    """Start a single-node Ray cluster with its job server (dashboard) on loopback.

    Use as a context manager; ``env`` holds the variables a client (``ray job submit``, ``JobSubmissionClient``) needs
    to authenticate, and ``dashboard_url`` the address to submit to.
    """

    def __init__(self, *, num_cpus: int = 1, ready_timeout_s: float = 120.0) -> None:
        if num_cpus < 1:
            raise ValueError(f"num_cpus must be >= 1, got {num_cpus}")
        self.num_cpus = num_cpus
        self.ready_timeout_s = ready_timeout_s
        # Short path: Ray's unix socket paths must stay under ~107 characters.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        self.port = free_port()
        self.dashboard_port = free_port()
        self.agent_port = free_port()
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        token_path = self.temp_dir / "auth_token"
        token_path.write_text(secrets.token_hex(32))
        token_path.chmod(0o600)
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token_path),
            "RAY_USAGE_STATS_ENABLED": "0",
            # Under `uv run` (how the tests and CLIs start), Ray would launch every worker with `uv run` in the job's
            # working dir, outside the project, i.e. without Ray installed; workers use this interpreter instead.
            "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
            # Jobs run `python`/console scripts from this environment, as they would in the cluster image.
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.temp_dir / "ray-start.log"

    def start(self) -> LocalRayHead:
        """Start the head node and wait until the job server answers."""
        ray = Path(sys.executable).parent / "ray"
        cmd = [
            str(ray) if ray.exists() else "ray", "start", "--head", "--block",
            "--port", str(self.port), "--num-cpus", str(self.num_cpus),
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
            "--dashboard-agent-listen-port", str(self.agent_port),
            "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.temp_dir), "--disable-usage-stats",
        ]  # fmt: skip
        logger.info("starting local Ray head: %s", " ".join(cmd))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        token = Path(self.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        request = urllib.request.Request(
            f"{self.dashboard_url}/api/version", headers={"Authorization": f"Bearer {token}"}
        )
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200 and "ray_version" in json.loads(response.read()) and self._agent_up():
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"Ray job server at {self.dashboard_url} not ready after {self.ready_timeout_s:.0f} s")

    def _agent_up(self) -> bool:
        # The job server hands each job to the node's dashboard agent; before it listens, submissions fail with 500.
        try:
            with socket.create_connection(("127.0.0.1", self.agent_port), timeout=1):
                return True
        except OSError:
            return False

    def log_tail(self, num_chars: int = 4000) -> str:
        """The end of ``ray start``'s output."""
        return self.log_path.read_text(errors="replace")[-num_chars:] if self.log_path.exists() else ""

    def leftover_pids(self) -> list[int]:
        """Processes that still reference this head's temp dir (in their command line or open files)."""
        marker = str(self.temp_dir)
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
                    continue
                for fd in (proc / "fd").iterdir():
                    if os.readlink(fd).startswith(marker):
                        found.append(int(proc.name))
                        break
            except (OSError, ValueError):
                continue
        return found

    def stop(self, timeout_s: float = 30.0) -> None:
        """Tear the node down: SIGTERM to ``ray start --block``, then end anything left from this head."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        deadline = time.monotonic() + 10
        while (pids := self.leftover_pids()) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in self.leftover_pids():
            logger.info("ending leftover Ray process %d of %s", pid, self.temp_dir)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        del pids

    def __enter__(self) -> LocalRayHead:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
