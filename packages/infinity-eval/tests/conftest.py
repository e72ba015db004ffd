"""Shared fixtures for infinity-eval tests: offline guard and tiny random models saved in the real formats."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the network: hub calls fail loudly instead of downloading."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1")):
            return original(self, address)
        raise OSError(f"network access attempted in an offline test: {address!r}")

    original = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="session")
def fid_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random FID Inception state dict, written once per session."""
    from infinity_eval.testing import write_random_fid_inception

    return write_random_fid_inception(tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-6726825d.pth")
