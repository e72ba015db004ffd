"""Test configuration for every package: where the project's reference material is, found here and not by libraries.

The official parity fixtures are the ``*.pt`` files of ``shared/fixtures/official`` (``shared`` is a sibling of this
checkout or of one of its parents; ``$INFINITY_SHARED_DIR`` names it instead) plus those of any directory named by
``$INFINITY_OFFICIAL_FIXTURES``; a file's kind is read from the file (its ``kind`` entry), so new fixtures are picked up
without code changes. A test that takes the argument ``official_bsq_vae_fixture`` or ``official_infinity_fixture``
runs once per fixture file of that kind, with the file's stem as its id (``test_x[vae_tiny]``), and is skipped with
the reason when there is none (a user's clone has no ``shared``). The fixtures ``shared_dir`` and ``toy_data_dir``
give the reference directory and the official 10-image toy data, or skip.

The suite runs on two pytest-xdist workers (``-n 2 --dist loadgroup`` in the root pyproject's addopts; ``-n 0`` runs
it in one process). Each test file runs on one worker. A test that starts Ray (a local cluster, a head node, Ray Train/Data/Serve) is marked
``ray_cluster``: all of them go to one worker, one at a time, because they scan for leftover Ray processes and share
the machine's Ray defaults. Each worker's torch (and what it starts) gets one thread per worker's share of the cores.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent
FIXTURE_ENV = "INFINITY_OFFICIAL_FIXTURES"
SHARED_ENV = "INFINITY_SHARED_DIR"
# test argument -> fixture kind
FIXTURE_ARGUMENTS = {"official_bsq_vae_fixture": "bsq_vae", "official_infinity_fixture": "infinity"}


def find_shared_dir() -> Path | None:
    """``$INFINITY_SHARED_DIR``, else a ``shared`` sibling of this checkout or of one of its parents, else None."""
    env = os.environ.get(SHARED_ENV)
    if env:
        return Path(env) if Path(env).is_dir() else None
    for parent in [REPO, *REPO.parents]:
        candidate = parent.parent / "shared"
        if (candidate / "fixtures").is_dir() or (candidate / "data").is_dir():
            return candidate
    return None


def fixture_dirs() -> list[Path]:
    """The directories searched for official fixtures (shared/fixtures/official, then $INFINITY_OFFICIAL_FIXTURES)."""
    dirs = []
    shared = find_shared_dir()
    if shared is not None and (shared / "fixtures" / "official").is_dir():
        dirs.append(shared / "fixtures" / "official")
    extra = os.environ.get(FIXTURE_ENV)
    if extra:
        if not Path(extra).is_dir():
            raise pytest.UsageError(f"${FIXTURE_ENV} points at {extra!r}, which is not a directory")
        dirs.append(Path(extra))
    return dirs


@functools.cache
def official_fixtures() -> dict[str, tuple[Path, ...]]:
    """Every official fixture file by kind (each file read once per session)."""
    import torch  # every package with parity tests depends on torch; the conftest itself needs it only here

    found: dict[str, list[Path]] = {}
    seen: set[Path] = set()
    for directory in fixture_dirs():
        for path in sorted(directory.glob("*.pt")):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            fixture = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(fixture, dict) and isinstance(fixture.get("kind"), str):
                found.setdefault(fixture["kind"], []).append(path)
    return {kind: tuple(paths) for kind, paths in found.items()}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "ray_cluster: starts Ray; such tests run one at a time on one xdist worker (group 'ray')"
    )
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and int(workers) > 1:
        # Two workers with torch's default thread count each would oversubscribe the cores (spin-waiting OpenMP).
        # Set before any test imports torch; subprocesses and Ray workers inherit it.
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, str(threads))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # xdist's loadgroup sends each group to one worker: a test file stays together (its module fixtures, such as a
    # trained model, are built once), and every Ray test joins the one "ray" group.
    for item in items:
        group = "ray" if item.get_closest_marker("ray_cluster") is not None else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for argument, kind in FIXTURE_ARGUMENTS.items():
        if argument not in metafunc.fixturenames:
            continue
        paths = official_fixtures().get(kind, ())
        if paths:
            metafunc.parametrize(argument, paths, ids=[p.stem for p in paths], scope="module")
        else:
            reason = (f"no official {kind!r} fixtures (shared/fixtures/official absent or without them, "
                      f"${FIXTURE_ENV} unset)")  # fmt: skip
            metafunc.parametrize(argument, [pytest.param(None, marks=pytest.mark.skip(reason=reason))],
                                 ids=["no-fixtures"], scope="module")  # fmt: skip


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared`` reference directory (official key lists, fixtures, toy data); skips when there is none."""
    shared = find_shared_dir()
    if shared is None:
        pytest.skip(f"no shared reference directory (../shared next to the checkout, or ${SHARED_ENV})")
    return shared


@pytest.fixture(scope="session")
def toy_data_dir() -> Path:
    """The official 10-image toy dataset (``shared/data/infinity_toy_data``); skips when it is absent."""
    shared = find_shared_dir()
    path = None if shared is None else shared / "data" / "infinity_toy_data"
    if path is None or not path.is_dir():
        pytest.skip(f"official toy data (shared/data/infinity_toy_data) not found (set ${SHARED_ENV})")
    return path
