from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


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
        pytest.skip(f"packaged demo model missing at {path} (trained by the bitwise-ar demo recipe)")
    return path


@pytest.fixture(scope="session")
def demo_url(demo_model_dir: Path) -> Iterator[str]:
    """The service with its default model (the demo model), on a free loopback port."""
    from infinity_service import ServiceConfig
    from infinity_service.app import create_app, load_engine
    from infinity_service.server import run_in_thread

    engine = load_engine(ServiceConfig(model_dir=str(demo_model_dir)))
    try:
        with run_in_thread(create_app(engine.config, engine)) as url:
            yield url
    finally:
        engine.stop()
