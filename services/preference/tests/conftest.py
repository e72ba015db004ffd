from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

ADMIN = "admin-token-for-tests-0123456789"
PROMPTS = (
    ("00000", "a red circle", "single_object"),
    ("00001", "two blue squares", "counting"),
    ("00002", "a green triangle above a red circle", "position"),
    ("00003", "three yellow stars", "counting"),
)


def write_eval_run(
    out: Path,
    *,
    color: tuple[int, int, int],
    model: str,
    prompts: Sequence[tuple[str, str, str]] = PROMPTS,
    images_per_prompt: int = 1,
    seed: int = 0,
    benchmark: str = "shapes",
    layout: str = "flat",
) -> Path:
    """An ``infinity-eval run --out OUT`` folder as the runner writes it (results.json params, the flat layout's
    prompts.jsonl with the prompt metadata, or GenEval's <NNNNN>/metadata.jsonl + samples/), with one small
    solid-colour PNG per (prompt, sample); no model is run."""
    root = out / benchmark / "images"
    root.mkdir(parents=True, exist_ok=True)
    if layout == "flat":
        lines = [json.dumps({"id": pid, "prompt": text, "task": category}) for pid, text, category in prompts]
        (root / "prompts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for index, (pid, text, category) in enumerate(prompts):
        if layout == "geneval":
            folder = root / f"{index:05d}"
            (folder / "samples").mkdir(parents=True, exist_ok=True)
            (folder / "metadata.jsonl").write_text(json.dumps({"tag": category, "prompt": text}) + "\n")
            samples = folder / "samples"
        else:
            samples = root / pid
            samples.mkdir(parents=True, exist_ok=True)
        for sample in range(images_per_prompt):
            shade = (color[0], color[1], (color[2] + 40 * index + sample) % 256)
            Image.new("RGB", (16, 16), shade).save(samples / f"{sample:04d}.png")
    params = {
        "suite": benchmark,
        "seed": str(seed),
        "mode": "generate+score",
        "model/model": f"/models/{model}",
        f"images_per_prompt/{benchmark}": str(images_per_prompt),
        f"prompts/{benchmark}": "digest",
    }
    results = {
        "suite": benchmark,
        "complete": True,
        "metrics": {},
        "params": params,
        "results": [{"benchmark": benchmark, "metric": "shapes", "headline": 0.5, "ci95": None, "num_images": 1}],
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return out


@pytest.fixture
def prompts() -> tuple[tuple[str, str, str], ...]:
    """(prompt id, prompt, category) of the fixture runs."""
    return PROMPTS


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, **kwargs: Any) -> Path:
        return write_eval_run(tmp_path / "runs" / name, **kwargs)

    return make


@pytest.fixture
def two_runs(make_run: Callable[..., Path]) -> tuple[Path, Path]:
    """Model "red" paints red images, model "blue" blue ones (a simulated rater can tell them apart by looking)."""
    return make_run("red", color=(250, 0, 0), model="red-model"), make_run(
        "blue", color=(0, 0, 250), model="blue-model"
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    from infinity_preference.db import make_engine
    from infinity_preference.study import StudyStore

    engine = make_engine(f"sqlite:///{tmp_path / 'db' / 'preference.db'}")
    yield StudyStore(engine, bootstrap_samples=200)
    engine.dispose()


@pytest.fixture
def client(store: Any, tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient
    from infinity_preference.app import create_app
    from infinity_preference.config import PreferenceConfig

    config = PreferenceConfig(data_dir=str(tmp_path / "data"), bootstrap_samples=200)
    with TestClient(create_app(config, store, admin_token=ADMIN)) as test_client:
        yield test_client


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}
