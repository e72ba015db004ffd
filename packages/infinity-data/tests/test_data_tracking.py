"""A tracked curation run: every setting is an MLflow param and every filter's counts are metrics (read back)."""

from __future__ import annotations

import json

import pytest
from infinity_data.cli import main
from infinity_data.config import load_config
from infinity_run.tracking import flatten


def test_curation_run_logs_every_filter_setting_and_per_filter_counts(synthetic_shards, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("INFINITY_SYSTEM_METRICS_INTERVAL", "1000")
    folder, _ = synthetic_shards
    out = tmp_path / "out"
    config = tmp_path / "run.toml"
    config.write_text(
        f'executor = "local"\nprogress = false\n[input]\npaths = ["{folder}"]\n[output]\npath = "{out}"\n'
        '[filters]\nenabled = ["caption", "resolution", "aspect_ratio", "dedup"]\n'
        '[filters.resolution]\npn = "0.06M"\n[tracking]\nkind = "mlflow"\nexperiment = "curation-test"\n'
    )
    # No URI anywhere: the store is sqlite under the run's output folder (infinity_run.tracking's rule).
    assert main(["curate", "--config", str(config), "filters.dedup.near_radius=3"]) == 0
    report = (out / "report" / "report.json").read_text()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("curation-test")
    (run,) = client.search_runs([experiment.experiment_id])
    params, metrics = run.data.params, run.data.metrics

    expected = flatten(load_config(config, ["filters.dedup.near_radius=3"]).to_dict())
    assert params == {k: str(v) for k, v in expected.items()}
    assert params["filters.dedup.near_radius"] == "3" and params["filters.resolution.pn"] == "0.06M"
    assert params["filters.enabled"] == str(["caption", "resolution", "aspect_ratio", "dedup"])

    totals = json.loads(report)["totals"]
    assert metrics["in"] == totals["in"] and metrics["kept"] == totals["kept"]
    assert metrics["dropped"] == totals["dropped"] and metrics["errors"] == totals["error_count"]
    for name in ("caption", "resolution", "aspect_ratio", "dedup"):
        counts = totals["filters"][name]
        assert metrics[f"filter.{name}.in"] == counts["in"] and metrics[f"filter.{name}.kept"] == counts["kept"]
        assert metrics[f"filter.{name}.dropped"] == counts["in"] - counts["kept"]
        for reason, count in counts["dropped"].items():
            assert metrics[f"filter.{name}.dropped.{reason}"] == count
    assert sum(metrics[f"filter.{n}.dropped"] for n in totals["filters"]) == totals["dropped"] > 0
    assert run.info.status == "FINISHED" and run.data.tags["output"] == str(out.resolve())
    assert "report/report.json" in {a.path for a in client.list_artifacts(run.info.run_id, "report")}
