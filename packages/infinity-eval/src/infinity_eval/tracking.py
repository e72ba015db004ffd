"""MLflow logging of a finished suite through :mod:`infinity_run.tracking` (its store rule, tags and system metrics):
a parent run per suite, a child run per (benchmark, metric).

Parent: params (model, weight sha256s, package versions, seeds, prompt digests), tags (suite, complete),
``results.json``, and the headline of every (benchmark, metric) as ``<benchmark>/<metric>`` with its bootstrap CI
(``…/ci95_low|high``) and image count, so suites compare side by side in the runs table. Child: the metric values and bootstrap CI (``<metric>/ci95_low|high``), the prompt set as an
MLflow dataset input, the per-image table (``<metric>/per_image.json``, thumbnails for small sets) and an image grid
(``log_image(key=<metric>/samples)``). Only the driver logs; Ray workers never touch MLflow.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infinity_run.config import TrackingSection
from infinity_run.tracking import tracker_for

from infinity_eval.images import load_image
from infinity_eval.results import MetricResult, SuiteResult, rows_table

logger = logging.getLogger(__name__)

MAX_TABLE_THUMBNAILS = 256
_BAD_KEY = re.compile(r"[^A-Za-z0-9_\-. :/]")


def metric_key(key: str) -> str:
    """MLflow-safe metric/param key (letters, digits, ``_-. :/``)."""
    return _BAD_KEY.sub("_", key)


def image_grid(paths: Sequence[Path], *, columns: int = 4, cell: int = 128) -> Any:
    """A PIL grid of thumbnails."""
    from PIL import Image

    rows = (len(paths) + columns - 1) // columns
    grid = Image.new("RGB", (columns * cell, max(rows, 1) * cell), "white")
    for i, path in enumerate(paths):
        thumb = load_image(path)
        thumb.thumbnail((cell, cell))
        grid.paste(thumb, ((i % columns) * cell, (i // columns) * cell))
    return grid


def _image_paths(metric: MetricResult) -> list[Path]:
    return list(metric.image_paths)


def _logged_model(mlflow: Any, result: SuiteResult, run_id: str) -> str | None:
    """An external LoggedModel for the evaluated checkpoint (params: model + weights digests), or None if unsupported."""
    if not hasattr(mlflow, "create_external_model"):
        return None
    name = Path(result.params.get("model/model", result.params.get("model/score_only", "images"))).name or "model"
    params = {metric_key(k): v for k, v in result.params.items() if k.startswith(("model/", "weights/"))}
    return mlflow.create_external_model(name=metric_key(name), source_run_id=run_id, params=params,
                                        model_type="text-to-image").model_id


def headline_metrics(result: SuiteResult) -> dict[str, float]:
    """``<benchmark>/<metric>``: each metric's headline, with ``…/ci95_low|high`` where computed and ``…/num_images``."""
    out: dict[str, float] = {}
    for metric in result.results:
        key = metric_key(f"{metric.benchmark}/{metric.metric}")
        if metric.headline is not None:
            out[key] = float(metric.headline)
        if metric.ci95 is not None:
            out[f"{key}/ci95_low"], out[f"{key}/ci95_high"] = (float(v) for v in metric.ci95)
        out[f"{key}/num_images"] = float(metric.num_images)
    return out


def log_suite(result: SuiteResult, tracking: TrackingSection) -> str:
    """Log ``result`` (store: ``tracking.tracking_uri`` > ``$MLFLOW_TRACKING_URI`` > ``<out>/mlflow.db``); returns
    the parent run id."""
    import pandas as pd
    from PIL import Image

    parent = tracker_for(tracking, result.out)
    try:
        _log_runs(parent, result, pd, Image)
    except BaseException:
        parent.finish("FAILED")
        raise
    parent.finish()
    return parent.run_id


def _log_runs(parent: Any, result: SuiteResult, pd: Any, Image: Any) -> None:
    parent.log_params({metric_key(k): v for k, v in result.params.items()})
    parent.set_tags({"suite": result.suite, "complete": str(result.complete).lower()})
    parent.log_metrics(headline_metrics(result), step=0)
    parent.log_artifact(result.out / "results.json")
    with parent.active() as mlflow:
        model_id = _logged_model(mlflow, result, parent.run_id)
    for metric in result.results:
        child = parent.child(f"{metric.benchmark}/{metric.metric}", tags={"benchmark": metric.benchmark,
                                                                          "metric": metric.metric})
        with child.active() as mlflow:
            prompts = pd.DataFrame(sorted({(str(r["prompt_id"]), str(r["prompt"])) for r in metric.rows}),
                                   columns=["prompt_id", "prompt"])
            dataset = mlflow.data.from_pandas(prompts, name=f"{metric.benchmark}-prompts")
            mlflow.log_input(dataset, context="eval")
            values = dict(metric.metrics)
            if metric.ci95 is not None:
                values[f"{metric.metric}/ci95_low"], values[f"{metric.metric}/ci95_high"] = metric.ci95
            values[f"{metric.metric}/num_images"] = float(metric.num_images)
            # Stamped with the evaluated model and the prompt-set digest (MLflow 3 lineage).
            mlflow.log_metrics({metric_key(k): float(v) for k, v in values.items()}, model_id=model_id, dataset=dataset)
            table = pd.DataFrame(rows_table(metric.rows))
            for column in table.columns:
                if table[column].map(lambda v: isinstance(v, dict | list)).any():
                    table[column] = table[column].map(lambda v: v if isinstance(v, str) else str(v))
            paths = _image_paths(metric)
            if len(paths) <= MAX_TABLE_THUMBNAILS:
                thumbs = []
                for p in paths:
                    im = Image.open(p).convert("RGB")
                    im.thumbnail((96, 96))
                    thumbs.append(mlflow.Image(im))
                table["image"] = thumbs
            mlflow.log_table(table, artifact_file=f"{metric.metric}/per_image.json")
        child.log_image(image_grid(paths[:16]), f"{metric.metric}/samples", step=0)
        child.finish()
