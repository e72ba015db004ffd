"""Shared fixtures: one local Ray instance per test session (Ray startup is slow), synthetic shards, tiny models."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """A 2-CPU local Ray instance shared by the Ray tests of one module (shut down after it, so later test modules
    of the whole-project run do not carry an idle cluster)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'infinity-data[ray]'")
    # Ray's `uv run` integration would package the repository as a runtime env for every worker; not needed locally.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        except Exception:  # Ray gives its raylet a fixed 30 s to register; on a loaded 2-core box retry once
            ray.shutdown()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory):
    """Three webdataset shards with clean, small, extreme-aspect, corrupt, truncated, text-heavy and duplicate
    samples; returns (folder, {key: expected outcome})."""
    from infinity_data.testing import make_synthetic_shards

    folder = tmp_path_factory.mktemp("synthetic_in")
    expected = make_synthetic_shards(folder, num_shards=3, clean_per_shard=4, seed=0)
    return folder, expected
