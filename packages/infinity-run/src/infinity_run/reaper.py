"""Ends a local Ray cluster's processes when the driver that started it dies without shutting it down.

``ray.init()`` without an address starts a cluster (GCS, raylet, dashboard, agents, workers) that outlives a driver
killed by SIGKILL. :func:`infinity_run.ray_train.init_ray` therefore starts this watcher beside every local cluster:
``python -m infinity_run.reaper PARENT_PID SESSION_DIR``. It polls the driver; once the driver is gone it sends
SIGTERM, then SIGKILL, to every process whose command line or open files name the session directory, and exits. Standard library
only; Linux ``/proc``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

POLL_S = 0.5
GRACE_S = 5.0


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _mentions(entry: Path, session_dir: str) -> bool:
    try:
        if session_dir in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
            return True
        # Ray's agents and workers rename themselves (ray::IDLE); their open log files still name the session
        return any(session_dir in os.readlink(fd) for fd in (entry / "fd").iterdir())
    except OSError:
        return False


def session_processes(session_dir: str) -> list[int]:
    """PIDs (other than this one) whose command line or open files name ``session_dir``."""
    me = os.getpid()
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and int(entry.name) != me and _mentions(entry, session_dir)
    ]


def sweep(session_dir: str) -> int:
    """SIGTERM, then after a grace period SIGKILL, every process of the session; returns how many there were."""
    pids = session_processes(session_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    for pid in session_processes(session_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def start_reaper(*, address: str | None = None) -> bool:
    """After ``ray.init``: when this process started the local cluster (no ``address``, no ``$RAY_ADDRESS``), start the
    watcher that ends the cluster's processes if this process dies without shutting Ray down. Returns whether it
    started one. Call it from every driver that may start a local cluster (training, curation, evaluation, serving)."""
    import subprocess

    if address not in (None, "", "local") or os.environ.get("RAY_ADDRESS"):
        return False
    try:
        from ray._private import worker
    except ImportError:
        return False
    node = getattr(worker, "_global_node", None)
    if node is None or not getattr(node, "head", True):
        return False
    subprocess.Popen(
        [sys.executable, "-m", "infinity_run.reaper", str(os.getpid()), node.get_session_dir_path()],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    return True


def main(argv: list[str]) -> int:
    parent, session_dir = int(argv[0]), argv[1]
    logging.raiseExceptions = False  # the driver's terminal or pipe may be gone with it: never fail on the notice
    logging.basicConfig(level=logging.WARNING, format="infinity-run: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver must not stop the watcher
    while alive(parent):
        time.sleep(POLL_S)
    if session_processes(session_dir):
        logger.warning("driver %d is gone; ending its Ray processes (%s)", parent, session_dir)
        sweep(session_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
