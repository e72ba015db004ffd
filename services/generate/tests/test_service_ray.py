"""The same app as a Ray Serve deployment: a private local Ray instance, the Serve proxy on loopback, real HTTP."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from infinity_service import ServiceConfig
from infinity_service.server import free_port
from PIL import Image

pytestmark = pytest.mark.slow


def _processes_using(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _quiet_port(low: int = 20000, high: int = 32000) -> int:
    """A free TCP port on 127.0.0.1 in [low, high) (random order), outside the ephemeral and Ray worker ranges."""
    import random
    import socket

    for port in random.sample(range(low, high), 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


@pytest.mark.ray_cluster
@pytest.mark.timeout(420)
def test_ray_serve_deployment_serves_the_app(demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray", reason="Ray Serve missing: uv sync (infinity-service[ray])")
    serve = pytest.importorskip("ray.serve")
    from infinity_service.ray_serve import run_serve

    # Workers use this interpreter (not `uv run` with the packaged working dir; Ray reads the variable at import,
    # so patch the constant too), no telemetry, and never join another cluster on this machine.
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "RAY_ENABLE_UV_RUN_RUNTIME_ENV", False)
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    from bitwise_ar.pipeline import InfinityPipeline

    pipe = InfinityPipeline.from_pretrained(demo_model_dir)
    native = pipe.defaults.image_size
    num_scales = pipe.layout_for(image_size=native).num_scales
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, configure_logging=False,
                 log_to_driver=False)  # fmt: skip
        # The proxy's port is picked once Ray runs, outside the kernel's ephemeral range (32768+, where Ray's own
        # connections land) and Ray's worker ports (10002-19999): a port chosen earlier was once taken meanwhile.
        config = ServiceConfig(port=_quiet_port(), max_queue=6)  # no model_dir: the default, packaged demo model
        url = run_serve(config, num_cpus=1, blocking=False)
        assert url == f"http://127.0.0.1:{config.port}"
        with httpx.Client(base_url=url, timeout=300) as client:
            deadline = time.monotonic() + 120
            while (health := client.get("/healthz")).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert health.status_code == 200 and health.json()["model"] == "demo_model", health.text

            # An image through Serve's proxy equals the pipeline called directly with the same seed.
            response = client.post("/v1/images", json={"prompt": "a purple star above a square", "seed": 3})
            assert response.status_code == 200, response.text
            (image,) = response.json()["images"]
            got = np.asarray(Image.open(io.BytesIO(base64.b64decode(image["png_base64"]))).convert("RGB"))
            # The replica has num_cpus=1, so Ray runs it with one intra-op thread; so does the reference (CPU sums
            # in another order can flip a bit whose probability sits at the sampling threshold).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                expected = pipe(["a purple star above a square"], seed=3, image_size=native).images[0]
            finally:
                torch.set_num_threads(threads)
            assert np.array_equal(got, np.asarray(expected)), np.mean(got != np.asarray(expected))

            # Server-sent previews stream through the proxy, the validation and the page are the app's own.
            with client.stream("POST", "/v1/images/stream", json={"prompt": "a dog", "seed": 1}) as stream:
                names = [line[7:] for line in stream.iter_lines() if line.startswith("event: ")]
            assert names.count("preview") == num_scales and names[-1] == "done"
            bad = client.post("/v1/images", json={"prompt": "a", "cfg": 50})
            assert bad.status_code == 422 and "'cfg' must be in" in json.loads(bad.text)["error"]["message"]
            assert client.get("/").headers["content-type"].startswith("text/html")
    finally:
        serve.shutdown()
        ray.shutdown()
        deadline = time.monotonic() + 20
        while (left := _processes_using(temp_dir)) and time.monotonic() < deadline:
            time.sleep(0.5)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert left == [], f"Ray processes left running: {left}"
