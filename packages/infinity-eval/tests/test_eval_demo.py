"""Demo run: the trained ShapesT2I demo model (bitwise_ar/demo_model) scored by ShapesEval, logged to MLflow."""

from __future__ import annotations

from importlib import util
from pathlib import Path

import pytest
from infinity_eval.runner import run_suite
from infinity_eval.suites import build_run_config


def _demo_model() -> Path | None:
    spec = util.find_spec("bitwise_ar")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "demo_model"
    return path if (path / "transformer").is_dir() else None


def test_demo_model_shapes_suite_logged_to_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _demo_model()
    if model is None:
        pytest.skip("the ShapesT2I demo model (bitwise_ar/demo_model/) has not been trained and committed yet")
    mlflow = pytest.importorskip("mlflow", reason="needs the mlflow extra")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = build_run_config({"run": {"suite": "shapes-demo", "model": str(model), "out": str(tmp_path / "out"),
                                    "limit": 12, "progress": False, "bootstrap_samples": 200},
                            "tracking": {"kind": "mlflow", "tracking_uri": uri, "experiment": "shapes-demo"}})
    result = run_suite(cfg)
    assert not result.complete  # 12 of the protocol's 240 prompts: tagged incomplete
    client = mlflow.MlflowClient(tracking_uri=uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # MlflowClient.load_table searches runs with the fluent API
    parent = client.get_run(result.params["mlflow_run_id"])
    assert parent.data.tags["complete"] == "false" and parent.data.params["suite"] == "shapes-demo"
    exp = client.get_experiment_by_name("shapes-demo")
    (child,) = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    overall = child.data.metrics["shapes/overall"]
    assert overall == pytest.approx(result.flat_metrics()["shapes/overall"]) and 0.0 <= overall <= 1.0
    table = client.load_table(exp.experiment_id, "shapes/per_image.json", run_ids=[child.info.run_id])
    assert len(table) == 12
