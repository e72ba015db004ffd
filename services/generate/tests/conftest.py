from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny pipeline written through the real bitwise-ar/bsq-tokenizer save_pretrained code."""
    from bitwise_ar.testing import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_pipeline") / "tiny-model", seed=0)


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path) -> Iterator[Any]:
    """One engine (model loaded once) for every in-process test of this directory."""
    from infinity_service import ServiceConfig
    from infinity_service.app import load_engine

    engine = load_engine(ServiceConfig(model_dir=str(tiny_model_dir), max_queue=6))
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def service_url(engine: Any) -> Iterator[str]:
    """The app on a real uvicorn server on a free loopback port (shared by the API and browser tests)."""
    from infinity_service.app import create_app
    from infinity_service.server import run_in_thread

    with run_in_thread(create_app(engine.config, engine)) as url:
        yield url


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """The packaged demo model (trained on ShapesT2I at its native size); tests needing it skip without it."""
    import bitwise_ar

    path = Path(bitwise_ar.__file__).resolve().parent / "demo_model"
    if not (path / "transformer").is_dir():
        pytest.skip(f"packaged demo model missing at {path} (trained by the infinity-shapes recipe, python -m infinity_shapes.recipe)")
    return path


def readme_start_command() -> list[str]:
    """The README's one-command start (its first `uv run infinity-service ...` line), as argv."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = re.search(r"^uv run (infinity-service [^\n]*)$", readme, flags=re.M).group(1)
    return shlex.split(line.split("#")[0])


@pytest.fixture(scope="session")
def demo_service(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The service with its default model (the packaged demo model), started with the README's one command in a
    child process on a free loopback port; stopped with SIGTERM at the end, which must exit 0."""
    from infinity_service.server import free_port

    argv = readme_start_command()
    port = free_port()
    log_path = tmp_path_factory.mktemp("demo_service") / "service.log"
    script = Path(sys.executable).parent / argv[0]  # what `uv run infinity-service` executes
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(script), *argv[1:], f"service.port={port}"], cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "service not ready in 180 s"
            time.sleep(0.3)
        yield {"url": url, "log": log_path, "argv": argv}
    finally:
        proc.send_signal(signal.SIGTERM)  # graceful: uvicorn drains, the engine stops, exit code 0
        rc = proc.wait(timeout=60)
    assert rc == 0, log_path.read_text()[-3000:]


@pytest.fixture(scope="session")
def demo_url(demo_service: dict[str, Any]) -> str:
    return str(demo_service["url"])
