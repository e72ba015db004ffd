"""The scaling report on MLflow runs made here: two model sizes with validation-loss curves, checkpoint eval runs (one
size with infinity-eval's parent/child layout, linked from the shell), Pearson r and its Fisher-z interval against
SciPy, the PNG/HTML/JSON outputs and the report run read back."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest
from infinity_eval.cli import main
from infinity_eval.scaling import collect_runs, correlations, pearson_ci, scaling_report, tag_eval_run, tag_training_run

mlflow = pytest.importorskip("mlflow", reason="needs the mlflow extra")
pytest.importorskip("matplotlib", reason="needs the mlflow extra (matplotlib)")

SIZES = {"small": (1.0e6, 2.0e9, 1.4), "large": (4.0e6, 8.0e9, 1.1)}  # params, FLOPs per step, loss floor
CHECKPOINTS = (100, 200, 300, 400)


def _loss(floor: float, step: int) -> float:
    return floor + 2.0 / math.sqrt(step)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Training runs with a loss curve every 50 steps, and an eval run per checkpoint with two metrics that fall with
    the loss (plus seeded noise) and bookkeeping keys the report must ignore."""
    root = tmp_path_factory.mktemp("scaling")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("scaling-test")
    rng = np.random.default_rng(0)
    truth: list[tuple[float, float, float]] = []
    train_ids = {}
    for size, (params, flops, floor) in SIZES.items():
        train = client.create_run(exp, run_name=f"train-{size}").info.run_id
        train_ids[size] = train
        for step in range(50, 401, 50):
            client.log_metric(train, "val_loss/bit_ce", _loss(floor, step), step=step)
            client.log_metric(train, "train/loss", _loss(floor, step) - 0.1, step=step)
        if size == "small":
            tag_training_run(uri, train, size=size, num_params=params, flops_per_step=flops)
        for step in CHECKPOINTS:
            loss = _loss(floor, step)
            geneval, reward = 1.5 - loss + rng.normal(0, 0.03), -2.0 * loss + rng.normal(0, 0.1)
            truth.append((loss, geneval, reward))
            run = client.create_run(exp, run_name=f"eval-{size}-{step}").info.run_id
            if size == "small":  # metrics in the run itself, linked through the library
                if step == 200:  # an eval run's own val loss: the training run's curve at that step takes precedence
                    client.log_metric(run, "val_loss/bit_ce", 99.0)
                client.log_metric(run, "geneval/overall", geneval)
                client.log_metric(run, "imagereward/mean", reward)
                client.log_metric(run, "geneval/ci95_low", geneval - 0.1)
                tag_eval_run(uri, run, train_run_id=train, step=step)
            else:  # infinity-eval's layout: a parent, a child run per metric; linked from the shell
                for key, value in (("geneval/overall", geneval), ("imagereward/mean", reward)):
                    child = client.create_run(exp, tags={"mlflow.parentRunId": run}).info.run_id
                    client.log_metric(child, key, value)
                    client.log_metric(child, key.split("/")[0] + "/num_images", 8.0)
                assert main(["scaling-link", run, "--mlflow-uri", uri, "--train-run", train, "--step", str(step)]) == 0
    assert main(["scaling-link", train_ids["large"], "--mlflow-uri", uri, "--size", "large",
                 "--num-params", "4e6", "--flops-per-step", "8e9"]) == 0
    # another experiment: a training run without a val-loss history, whose eval runs logged their own val loss
    fallback = client.create_experiment("scaling-fallback")
    train = client.create_run(fallback, run_name="train-tiny").info.run_id
    tag_training_run(uri, train, size="tiny")
    for step in CHECKPOINTS:
        run = client.create_run(fallback, run_name=f"eval-tiny-{step}").info.run_id
        if step != 400:  # the last one has no val loss anywhere: skipped
            client.log_metric(run, "val_loss/bit_ce", _loss(2.0, step))
        client.log_metric(run, "geneval/overall", 0.1 * step)
        tag_eval_run(uri, run, train_run_id=train, step=step)
    return {"uri": uri, "root": root, "truth": np.array(truth), "train_ids": train_ids}


def test_pearson_ci_matches_scipy_fisher_interval() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for n in (4, 9, 40):
        x = rng.normal(size=n)
        y = -0.7 * x + rng.normal(size=n)
        r, low, high = pearson_ci(x, y, confidence=0.9)
        ref = stats.pearsonr(x, y)
        ci = ref.confidence_interval(confidence_level=0.9)
        assert r == pytest.approx(ref.statistic, abs=1e-12)
        assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-9)
        assert low < r < high
    assert pearson_ci([1, 2, 3], [3, 2, 1])[0] == pytest.approx(-1.0)
    assert all(math.isnan(v) for v in pearson_ci([1, 2, 3], [1, 3, 2])[1:])  # n = 3: r but no interval
    with pytest.raises(ValueError, match="constant"):
        pearson_ci([1, 2, 3, 4], [5, 5, 5, 5])
    with pytest.raises(ValueError, match="at least 3"):
        pearson_ci([1, 2], [1, 2])


def test_collect_links_curves_and_checkpoints(store: dict) -> None:
    data = collect_runs(store["uri"], ["scaling-test"])
    assert [c.size for c in data.curves] == ["small", "large"]  # ordered by parameter count
    small = data.curves[0]
    assert small.steps == tuple(range(50, 401, 50))
    assert small.loss == pytest.approx([_loss(1.4, s) for s in small.steps])
    assert small.flops == pytest.approx([s * 2.0e9 for s in small.steps])
    assert len(data.points) == 2 * len(CHECKPOINTS)
    for point in data.points:  # the loss comes from the training curve at the checkpoint's step
        assert point.val_loss == pytest.approx(_loss(SIZES[point.size][2], point.step))
        assert set(point.metrics) == {"geneval/overall", "imagereward/mean"}  # ci95 / num_images / val_loss left out
        assert point.val_loss_source == "training run"
    assert {c.source for c in data.curves} == {"training run"}


def test_without_a_training_history_the_eval_runs_val_loss_is_used(store: dict) -> None:
    data = collect_runs(store["uri"], ["scaling-fallback"])
    (curve,) = data.curves
    assert curve.source == "eval runs" and curve.steps == CHECKPOINTS[:3]
    assert curve.loss == pytest.approx([_loss(2.0, s) for s in CHECKPOINTS[:3]])
    assert [(p.step, p.val_loss_source) for p in data.points] == [(s, "eval run") for s in CHECKPOINTS[:3]]
    assert [p.val_loss for p in data.points] == pytest.approx(curve.loss)


def test_report_files_and_mlflow_run(store: dict) -> None:
    out = store["root"] / "report"
    report = scaling_report(store["uri"], ["scaling-test"], out)
    truth = store["truth"]
    by_metric = {c.metric: c for c in report.correlations}
    for column, name in ((1, "geneval/overall"), (2, "imagereward/mean")):
        expected = np.corrcoef(truth[:, 0], truth[:, column])[0, 1]
        assert by_metric[name].r == pytest.approx(expected, abs=1e-9)
        assert by_metric[name].n == 8 and by_metric[name].ci_low < by_metric[name].r < by_metric[name].ci_high
    assert by_metric["geneval/overall"].r < -0.9
    for name in ("curves", "correlation"):
        assert report.files[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = report.files["html"].read_text()
    embedded = page.split("data:image/png;base64,")[1:]
    assert len(embedded) == 2 and "src='http" not in page and "<link" not in page
    assert base64.b64decode(embedded[0].split("'")[0]) == report.files["curves"].read_bytes()
    assert json.loads(report.files["json"].read_text())["correlations"][0]["metric"] == "geneval/overall"

    client = mlflow.MlflowClient(tracking_uri=store["uri"])
    run = client.get_run(report.run_id)
    assert run.data.tags["scaling.role"] == "report"
    assert run.data.metrics["scaling/pearson/geneval/overall"] == pytest.approx(by_metric["geneval/overall"].r)
    assert run.data.metrics["scaling/pearson/imagereward/mean/ci_high"] == pytest.approx(by_metric["imagereward/mean"].ci_high)
    logged = {Path(a.path).name for a in client.list_artifacts(report.run_id, "scaling")}
    assert logged == {"scaling_curves.png", "scaling_correlation.png", "scaling_report.html", "scaling_report.json"}
    # the report run is neither a training nor an eval run: a second report reads the same checkpoints
    assert len(collect_runs(store["uri"], ["scaling-test"]).points) == 2 * len(CHECKPOINTS)


def test_cli_report_and_bad_input(store: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["scaling", "--mlflow-uri", store["uri"], "--experiment", "scaling-test", "--out", str(tmp_path),
            "--metric", "imagereward/mean", "--log-experiment", ""]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("pearson/imagereward/mean\t-0.9") and lines[-1].endswith("scaling_report.html")
    assert main([*args[:-4], "--metric", "nope/overall"]) == 2
    assert "reported by 0 checkpoints" in capsys.readouterr().err
    assert main(["scaling", "--mlflow-uri", store["uri"], "--experiment", "missing", "--out", str(tmp_path)]) == 2
    assert "no MLflow experiment 'missing'" in capsys.readouterr().err
    assert main(["scaling-link", "x", "--mlflow-uri", store["uri"], "--train-run", "y"]) == 2
    assert "needs --step" in capsys.readouterr().err
    with pytest.raises(ValueError, match="non-empty"):
        tag_training_run(store["uri"], store["train_ids"]["small"], size="")


def test_correlations_skip_metrics_with_too_few_points(store: dict) -> None:
    data = collect_runs(store["uri"], ["scaling-test"])
    few = [p for p in data.points if p.size == "small"][:2]
    assert correlations(few) == []
    with pytest.raises(ValueError, match="reported by 2 checkpoints"):
        correlations(few, ["geneval/overall"])
