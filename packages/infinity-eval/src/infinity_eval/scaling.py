"""Scaling report (paper Figs. 9-10): validation loss against training steps and FLOPs per model size, and the Pearson
correlation between validation loss and each evaluation metric across checkpoints.

Which MLflow runs it reads, linked by tags (:func:`tag_training_run` and :func:`tag_eval_run` set them;
``infinity-eval scaling-link`` does the same from the shell):

* a **training run** carries the tag ``scaling.size`` (the model-size label, e.g. ``"d4w128"``) and optionally
  ``scaling.num_params`` and ``scaling.flops_per_step`` (training FLOPs of one optimiser step, e.g.
  ``batch × bitwise_ar.costs.training_flops_per_sample``); its validation-loss curve is the history of the metric
  ``loss_key`` (default ``val_loss/bit_ce``) that the bitwise-ar trainer logs itself at training steps with a
  ``[val]`` section (:mod:`bitwise_ar.train.validation`);
* an **eval run** of a checkpoint carries ``scaling.train_run_id`` (its training run) and ``scaling.step`` (the
  checkpoint's step); its metrics are its own plus those of its nested child runs (the layout of
  ``infinity-eval run``), and they are what the validation loss is correlated with.

Which validation loss counts: the training run's own curve wherever it has a value (the curve, and a checkpoint whose
step it logged); an eval run's own ``loss_key`` (``infinity-eval val-loss`` of the checkpoint) only where the training
run logged none: for a checkpoint at a step missing from the curve, and, for a training run with no history at all,
as its curve (the points' ``val_loss_source`` and the curves' ``source`` say which was used).

The correlation is Pearson's r over all checkpoints of all sizes, with a Fisher-z confidence interval
(z = atanh r ± z_{1-α/2}/√(n-3), needs n ≥ 4). Outputs: ``scaling_curves.png``, ``scaling_correlation.png``, a
self-contained ``scaling_report.html`` (images embedded as base64) and ``scaling_report.json``; all are also logged to
a new MLflow run (tag ``scaling.role = report``) with the correlations as metrics ``scaling/pearson/<metric>`` and
``…/ci_low|high`` (the interval's ``confidence`` is a param of that run).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from infinity_run.tracking import MLflowTracker

logger = logging.getLogger(__name__)

SIZE_TAG = "scaling.size"
NUM_PARAMS_TAG = "scaling.num_params"
FLOPS_PER_STEP_TAG = "scaling.flops_per_step"
TRAIN_RUN_TAG = "scaling.train_run_id"
STEP_TAG = "scaling.step"
ROLE_TAG = "scaling.role"
DEFAULT_LOSS_KEY = "val_loss/bit_ce"
# Bookkeeping keys that are not evaluation metrics.
_SKIP_SUFFIXES = ("/ci95_low", "/ci95_high", "/num_images", "/std")


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as exc:
        raise ImportError("the scaling report needs mlflow: pip install 'infinity-eval[mlflow]'") from exc
    return mlflow


@dataclass(frozen=True)
class TrainingCurve:
    """Validation loss of one training run at its logged steps."""

    run_id: str
    size: str
    steps: tuple[int, ...]
    loss: tuple[float, ...]
    num_params: float | None = None
    flops_per_step: float | None = None
    source: str = "training run"
    """Where the values come from: "training run" (its own history) or "eval runs" (their val loss, no history)."""

    def loss_at(self, step: int) -> float | None:
        return dict(zip(self.steps, self.loss)).get(step)

    @property
    def flops(self) -> tuple[float, ...] | None:
        """Cumulative training FLOPs at each logged step (None without ``scaling.flops_per_step``)."""
        return None if self.flops_per_step is None else tuple(s * self.flops_per_step for s in self.steps)


@dataclass(frozen=True)
class CheckpointPoint:
    """One evaluated checkpoint: its validation loss and evaluation metrics."""

    eval_run_id: str
    train_run_id: str
    size: str
    step: int
    val_loss: float
    metrics: Mapping[str, float]
    val_loss_source: str = "training run"
    """"training run" (the trainer's curve at this step) or "eval run" (the eval run's own value)."""


@dataclass(frozen=True)
class Correlation:
    """Pearson r of validation loss with ``metric`` over ``n`` checkpoints, with its Fisher-z interval."""

    metric: str
    n: int
    r: float
    ci_low: float
    ci_high: float


@dataclass
class ScalingData:
    curves: list[TrainingCurve] = field(default_factory=list)
    points: list[CheckpointPoint] = field(default_factory=list)


@dataclass
class ScalingReport:
    data: ScalingData
    correlations: list[Correlation]
    files: dict[str, Path]
    run_id: str | None = None


# ---------------------------------------------------------------------------------------------------------- linking
def _client(tracking_uri: str) -> Any:
    return _mlflow().MlflowClient(tracking_uri=tracking_uri)


def tag_training_run(tracking_uri: str, run_id: str, *, size: str, num_params: float | None = None,
                     flops_per_step: float | None = None) -> None:
    """Mark ``run_id`` as a training run of model size ``size`` (and its parameter count / FLOPs per step)."""
    if not size:
        raise ValueError("a training run needs a non-empty size label")
    tags = {SIZE_TAG: size, ROLE_TAG: "train"}
    if num_params is not None:
        tags[NUM_PARAMS_TAG] = repr(float(num_params))
    if flops_per_step is not None:
        if flops_per_step <= 0:
            raise ValueError(f"flops_per_step must be > 0, got {flops_per_step}")
        tags[FLOPS_PER_STEP_TAG] = repr(float(flops_per_step))
    client = _client(tracking_uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def tag_eval_run(tracking_uri: str, run_id: str, *, train_run_id: str, step: int) -> None:
    """Mark ``run_id`` as the evaluation of the checkpoint of ``train_run_id`` at ``step``."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    client = _client(tracking_uri)
    client.get_run(train_run_id)  # fails with MLflow's message when the training run does not exist
    for key, value in {TRAIN_RUN_TAG: train_run_id, STEP_TAG: str(int(step)), ROLE_TAG: "eval"}.items():
        client.set_tag(run_id, key, value)


# ---------------------------------------------------------------------------------------------------------- reading
def _float_tag(tags: Mapping[str, str], key: str, run_id: str) -> float | None:
    if key not in tags:
        return None
    try:
        return float(tags[key])
    except ValueError as exc:
        raise ValueError(f"run {run_id}: tag {key}={tags[key]!r} is not a number") from exc


def _is_metric(key: str, loss_key: str) -> bool:
    if key == loss_key or key.startswith(("system/", "scaling/")) or key.endswith(_SKIP_SUFFIXES):
        return False
    return key.split("/")[0] != loss_key.split("/")[0]  # other validation-loss variants are not evaluation metrics


def collect_runs(tracking_uri: str, experiments: Sequence[str], *, loss_key: str = DEFAULT_LOSS_KEY) -> ScalingData:
    """Training curves and evaluated checkpoints from the runs of ``experiments`` (names)."""
    client = _client(tracking_uri)
    ids = []
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise ValueError(f"no MLflow experiment {name!r} at {tracking_uri}")
        ids.append(exp.experiment_id)
    runs = []
    token = None
    while True:
        page = client.search_runs(ids, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    children: dict[str, list[Any]] = {}
    for run in runs:
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent:
            children.setdefault(parent, []).append(run)

    data = ScalingData()
    curves: dict[str, TrainingCurve] = {}
    for run in runs:
        tags = run.data.tags
        if SIZE_TAG not in tags:
            continue
        rid = run.info.run_id
        history = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(rid, loss_key))
        per_step = {step: value for step, _, value in history}  # the last value logged at a step wins
        curve = TrainingCurve(run_id=rid, size=tags[SIZE_TAG], steps=tuple(per_step), loss=tuple(per_step.values()),
                              num_params=_float_tag(tags, NUM_PARAMS_TAG, rid),
                              flops_per_step=_float_tag(tags, FLOPS_PER_STEP_TAG, rid))
        curves[rid] = curve

    own_losses: dict[str, list[tuple[int, float]]] = {}
    for run in runs:
        tags = run.data.tags
        if TRAIN_RUN_TAG not in tags:
            continue
        rid, train_id = run.info.run_id, tags[TRAIN_RUN_TAG]
        if train_id not in curves:
            raise ValueError(f"eval run {rid} names training run {train_id}, which is not a tagged training run "
                             f"({SIZE_TAG}) in experiments {list(experiments)}")
        try:
            step = int(tags.get(STEP_TAG, ""))
        except ValueError as exc:
            raise ValueError(f"eval run {rid}: tag {STEP_TAG}={tags.get(STEP_TAG)!r} is not an integer step") from exc
        metrics: dict[str, float] = {}
        for member in [run, *children.get(rid, [])]:
            metrics.update(member.data.metrics)
        trained, own = curves[train_id].loss_at(step), metrics.get(loss_key)
        if own is not None:
            own_losses.setdefault(train_id, []).append((step, float(own)))
        if trained is None and own is None:
            logger.warning("eval run %s: no %s in the run and none at step %d of training run %s; skipped",
                           rid, loss_key, step, train_id)
            continue
        data.points.append(CheckpointPoint(
            eval_run_id=rid, train_run_id=train_id, size=curves[train_id].size, step=step,
            val_loss=float(trained if trained is not None else own),
            metrics={k: float(v) for k, v in metrics.items() if _is_metric(k, loss_key)},
            val_loss_source="training run" if trained is not None else "eval run"))
    for train_id, pairs in own_losses.items():
        curve = curves[train_id]
        if not curve.steps:  # no history of its own: the curve of its evaluated checkpoints
            per_step = dict(sorted(pairs))
            curves[train_id] = dataclasses.replace(curve, steps=tuple(per_step), loss=tuple(per_step.values()),
                                                   source="eval runs")
    data.curves = sorted(curves.values(), key=lambda c: (c.num_params or 0.0, c.size, c.run_id))
    data.points.sort(key=lambda p: (p.size, p.step, p.eval_run_id))
    for curve in data.curves:
        if not curve.steps:
            logger.warning("training run %s (size %s) has no %s history and no evaluated checkpoint logged one",
                           curve.run_id, curve.size, loss_key)
    return data


# ------------------------------------------------------------------------------------------------------- statistics
def pearson_ci(x: Sequence[float], y: Sequence[float], *, confidence: float = 0.95) -> tuple[float, float, float]:
    """Pearson r with its Fisher-z ``confidence`` interval: ``(r, low, high)``; the interval is NaN for n < 4."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of equal length, got {xs.shape} and {ys.shape}")
    n = len(xs)
    if n < 3:
        raise ValueError(f"a correlation needs at least 3 points, got {n}")
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        raise ValueError("a correlation needs values that vary (one of the series is constant)")
    dx, dy = xs - xs.mean(), ys - ys.mean()
    r = float(np.clip(dx @ dy / math.sqrt((dx @ dx) * (dy @ dy)), -1.0, 1.0))
    if n < 4:
        return r, math.nan, math.nan
    z_crit = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    z, half = math.atanh(min(max(r, -1 + 1e-15), 1 - 1e-15)), z_crit / math.sqrt(n - 3)
    return r, math.tanh(z - half), math.tanh(z + half)


def correlations(points: Sequence[CheckpointPoint], metrics: Sequence[str] | None = None, *,
                 confidence: float = 0.95) -> list[Correlation]:
    """Pearson r of validation loss with each metric over the checkpoints that report it (default: every metric
    reported by at least 3 checkpoints, in name order)."""
    names = list(metrics) if metrics else sorted({k for p in points for k in p.metrics})
    out = []
    for name in names:
        pairs = [(p.val_loss, p.metrics[name]) for p in points if name in p.metrics]
        if metrics and len(pairs) < 3:
            raise ValueError(f"metric {name!r} is reported by {len(pairs)} checkpoints; a correlation needs 3")
        if len(pairs) < 3:
            continue
        xs, ys = zip(*pairs)
        try:
            r, low, high = pearson_ci(xs, ys, confidence=confidence)
        except ValueError as exc:
            if metrics:
                raise ValueError(f"metric {name!r}: {exc}") from exc
            logger.info("metric %s skipped: %s", name, exc)
            continue
        out.append(Correlation(metric=name, n=len(pairs), r=r, ci_low=low, ci_high=high))
    return out


# ------------------------------------------------------------------------------------------------------------ plots
def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("the scaling report plots need matplotlib: pip install 'infinity-eval[mlflow]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(curve: TrainingCurve) -> str:
    return curve.size if curve.num_params is None else f"{curve.size} ({curve.num_params / 1e6:.3g}M params)"


def plot_curves(data: ScalingData, path: Path, *, loss_key: str = DEFAULT_LOSS_KEY) -> Path:
    """Validation loss vs training steps and vs training FLOPs (log axis), one line per training run."""
    plt = _pyplot()
    fig, (ax_steps, ax_flops) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = _size_colors(data)
    for curve in data.curves:
        if not curve.steps:
            continue
        ax_steps.plot(curve.steps, curve.loss, "o-", ms=3, color=colors[curve.size], label=_label(curve))
        if curve.flops is not None:
            ax_flops.plot(curve.flops, curve.loss, "o-", ms=3, color=colors[curve.size], label=_label(curve))
    ax_steps.set(xlabel="training step", ylabel=loss_key, title="validation loss vs steps")
    ax_flops.set(xlabel="training FLOPs", ylabel=loss_key, title="validation loss vs training FLOPs", xscale="log")
    ax_flops.xaxis.set_minor_formatter(plt.NullFormatter())  # log-axis minor labels overlap on short ranges
    if not any(c.flops_per_step for c in data.curves):
        ax_flops.text(0.5, 0.5, f"no run has the tag {FLOPS_PER_STEP_TAG}", ha="center", transform=ax_flops.transAxes)
    for ax in (ax_steps, ax_flops):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _size_colors(data: ScalingData) -> dict[str, Any]:
    sizes = list(dict.fromkeys(c.size for c in data.curves))
    palette = _pyplot().get_cmap("viridis")
    return {s: palette(i / max(len(sizes) - 1, 1) * 0.9) for i, s in enumerate(sizes)}


def plot_correlations(data: ScalingData, corrs: Sequence[Correlation], path: Path, *,
                      loss_key: str = DEFAULT_LOSS_KEY) -> Path:
    """One scatter per metric: metric vs validation loss, coloured by model size, r and its CI in the title."""
    plt = _pyplot()
    cols = min(3, max(len(corrs), 1))
    rows = max(1, math.ceil(len(corrs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    colors = _size_colors(data)
    for ax, corr in zip(axes.flat, corrs):
        for size in colors:
            pts = [p for p in data.points if p.size == size and corr.metric in p.metrics]
            ax.scatter([p.val_loss for p in pts], [p.metrics[corr.metric] for p in pts], color=colors[size], label=size, s=22)
        ax.set(xlabel=loss_key, ylabel=corr.metric, title=f"{corr.metric}\n{_format_r(corr)}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(corrs):]:
        ax.axis("off")
    if not corrs:
        axes.flat[0].text(0.5, 0.5, "no metric with 3 or more checkpoints", ha="center", transform=axes.flat[0].transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _format_r(corr: Correlation) -> str:
    ci = "CI n/a (n<4)" if math.isnan(corr.ci_low) else f"95% CI [{corr.ci_low:.3f}, {corr.ci_high:.3f}]"
    return f"r = {corr.r:.3f}, {ci}, n = {corr.n}"


# ------------------------------------------------------------------------------------------------------------- HTML
def render_html(data: ScalingData, corrs: Sequence[Correlation], images: Mapping[str, Path], *,
                loss_key: str = DEFAULT_LOSS_KEY, confidence: float = 0.95) -> str:
    """A self-contained page: the PNGs inlined as base64, the correlation table and the list of runs."""
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Scaling report</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}</style></head><body>",
             "<h1>Scaling report</h1>",
             f"<p>Validation loss <code>{esc(loss_key)}</code>; {len(data.curves)} training runs, {len(data.points)} "
             f"evaluated checkpoints. Pearson r over all checkpoints with a {confidence:.0%} Fisher-z interval.</p>"]
    for title, path in images.items():
        encoded = base64.b64encode(Path(path).read_bytes()).decode()
        parts.append(f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='data:image/png;base64,{encoded}'>")
    parts.append("<h2>Correlation with validation loss</h2><table><tr><th>metric</th><th>n</th><th>r</th>"
                 "<th>CI low</th><th>CI high</th></tr>")
    for c in corrs:
        parts.append(f"<tr><td style='text-align:left'>{esc(c.metric)}</td><td>{c.n}</td><td>{c.r:.4f}</td>"
                     f"<td>{c.ci_low:.4f}</td><td>{c.ci_high:.4f}</td></tr>")
    parts.append("</table><h2>Training runs</h2><table><tr><th>size</th><th>params</th><th>FLOPs / step</th>"
                 "<th>logged steps</th><th>final loss</th><th>loss from</th><th>run</th></tr>")
    for c in data.curves:
        final = f"{c.loss[-1]:.4f}" if c.loss else "-"
        parts.append(f"<tr><td>{esc(c.size)}</td><td>{c.num_params or '-'}</td><td>{c.flops_per_step or '-'}</td>"
                     f"<td>{len(c.steps)}</td><td>{final}</td><td>{esc(c.source)}</td><td>{esc(c.run_id)}</td></tr>")
    parts.append("</table><h2>Checkpoints</h2><table><tr><th>size</th><th>step</th><th>val loss</th><th>loss from</th><th>eval run</th></tr>")
    for p in data.points:
        parts.append(f"<tr><td>{esc(p.size)}</td><td>{p.step}</td><td>{p.val_loss:.4f}</td><td>{esc(p.val_loss_source)}</td><td>{esc(p.eval_run_id)}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------------- report
def scaling_report(tracking_uri: str, experiments: Sequence[str], out: str | Path, *,
                   loss_key: str = DEFAULT_LOSS_KEY, metrics: Sequence[str] | None = None, confidence: float = 0.95,
                   log_experiment: str | None = None) -> ScalingReport:
    """Read the runs, write the PNGs, HTML and JSON under ``out``, and log them to a new MLflow run in
    ``log_experiment`` (default: the first of ``experiments``; ``""`` logs nothing)."""
    if not experiments:
        raise ValueError("name at least one MLflow experiment to read")
    data = collect_runs(tracking_uri, experiments, loss_key=loss_key)
    if not data.curves:
        raise ValueError(f"no training run tagged {SIZE_TAG} in experiments {list(experiments)}")
    corrs = correlations(data.points, metrics, confidence=confidence)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"curves": plot_curves(data, out / "scaling_curves.png", loss_key=loss_key),
             "correlation": plot_correlations(data, corrs, out / "scaling_correlation.png", loss_key=loss_key)}
    page = render_html(data, corrs, {"Validation loss vs steps and FLOPs": files["curves"],
                                     "Metrics vs validation loss": files["correlation"]},
                       loss_key=loss_key, confidence=confidence)
    files["html"] = out / "scaling_report.html"
    files["html"].write_text(page)
    files["json"] = out / "scaling_report.json"
    files["json"].write_text(json.dumps({"loss_key": loss_key, "confidence": confidence,
                                         "curves": [asdict(c) for c in data.curves],
                                         "points": [asdict(p) for p in data.points],
                                         "correlations": [_json_safe(asdict(c)) for c in corrs]}, indent=2))
    report = ScalingReport(data=data, correlations=corrs, files=files)
    target = experiments[0] if log_experiment is None else log_experiment
    if target:
        tracker = MLflowTracker(experiment=target, run_name="scaling-report", tracking_uri=tracking_uri,
                                tags={ROLE_TAG: "report"}, system_metrics=False)
        tracker.log_params({"loss_key": loss_key, "experiments": ",".join(experiments), "confidence": confidence,
                            "num_training_runs": len(data.curves), "num_checkpoints": len(data.points)})
        values: dict[str, float] = {}
        for c in corrs:
            values[f"scaling/pearson/{c.metric}"] = c.r
            if not math.isnan(c.ci_low):
                values[f"scaling/pearson/{c.metric}/ci_low"] = c.ci_low
                values[f"scaling/pearson/{c.metric}/ci_high"] = c.ci_high
        tracker.log_metrics(values, step=0)
        for path in files.values():
            tracker.log_artifact(path, "scaling")
        tracker.finish()
        report.run_id = tracker.run_id
    return report


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
