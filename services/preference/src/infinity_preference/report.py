"""Study results to MLflow, through the project's one tracking integration (``infinity_run.tracking``)."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infinity_run.config import TrackingSection
from infinity_run.tracking import make_tracker

__all__ = ["log_results", "result_metrics"]


def _name(text: str) -> str:
    # MLflow metric names allow letters, digits and _-. /: keep labels readable, replace the rest
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)


def result_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """Flat metrics: ``<criterion>/<A>_vs_<B>/<win|tie|loss>`` (+ ``_ci_low``/``_ci_high``, ``/n``), the same under
    ``.../category/<name>/...``, and ``agreement/<criterion>/<statistic>``."""
    out: dict[str, float] = {}
    for comparison in results["comparisons"]:
        versus = _name(f"{comparison['model_a']}_vs_{comparison['model_b']}")
        for criterion, entry in comparison["criteria"].items():
            _rates(out, f"{criterion}/{versus}", entry)
            for category, sub in entry["categories"].items():
                _rates(out, f"{criterion}/{versus}/category/{_name(category)}", sub)
    for criterion, stats in results["agreement"].items():
        for key, value in stats.items():
            if value is not None:
                out[f"agreement/{criterion}/{key}"] = float(value)
    for key, value in results["progress"].items():
        out[f"progress/{key}"] = float(value)
    return out


def _rates(out: dict[str, float], prefix: str, entry: Mapping[str, Any]) -> None:
    out[f"{prefix}/n"] = float(entry["n"])
    for name in ("win", "tie", "loss"):
        if entry[name]["rate"] is None:
            continue
        out[f"{prefix}/{name}"] = float(entry[name]["rate"])
        if entry[name]["ci"] is not None:
            out[f"{prefix}/{name}_ci_low"], out[f"{prefix}/{name}_ci_high"] = map(float, entry[name]["ci"])


def log_results(results: Mapping[str, Any], tracking: TrackingSection, run_dir: str | Path) -> str:
    """One MLflow run per call: the study as params, every rate/CI/agreement as metrics, results.json as artifact;
    the store follows ``infinity_run.tracking.resolve_tracking_uri`` (``tracking.tracking_uri`` >
    ``$MLFLOW_TRACKING_URI`` > ``sqlite:///<run_dir>/mlflow.db``). Returns the run id."""
    study = results["study"]
    tracker = make_tracker("mlflow", experiment=tracking.experiment,
                           run_name=tracking.run_name or f"preference-{study['id']}-{study['name']}",
                           tracking_uri=tracking.tracking_uri or None, run_dir=run_dir, system_metrics=False,
                           tags={"infinity.kind": "preference-study"})  # fmt: skip
    try:
        tracker.log_params({"study.id": study["id"], "study.name": study["name"], "study.benchmark": study["benchmark"],
                            "study.seed": study["seed"], "study.ratings_per_pair": study["ratings_per_pair"],
                            "study.models": json.dumps(results["models"]),
                            "bootstrap": json.dumps(results["bootstrap"], sort_keys=True)})  # fmt: skip
        tracker.log_metrics(result_metrics(results), step=int(results["progress"]["ratings"]))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "preference_results.json"
            path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
            tracker.log_artifact(path)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    return str(tracker.run_id)
