"""Run reports: aggregate the per-shard stats into JSON + Markdown, PNG histograms, and the tracked run's metrics."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from infinity_run.tracking import Tracker, flatten

from .commit import OutputLayout, _write_atomic
from .config import CurateConfig
from .filters import FILTER_NAMES

__all__ = ["aggregate", "log_report", "write_report"]

logger = logging.getLogger(__name__)


def aggregate(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum per-shard stats (any subset, any order) into run totals."""
    total: dict[str, Any] = {"shards": len(stats), "in": 0, "kept": 0, "dropped": 0}
    errors: Counter[str] = Counter()
    templates: Counter[str] = Counter()
    stage_seconds: Counter[str] = Counter()
    filters: dict[str, dict[str, Any]] = {}
    histograms: dict[str, dict[str, Any]] = {}
    reencoded = 0
    for s in stats:
        for key in ("in", "kept", "dropped"):
            total[key] += s[key]
        errors.update(s["errors"])
        templates.update(s["templates"])
        stage_seconds.update(s["stage_seconds"])
        reencoded += s.get("reencoded", 0)
        for name, f in s["filters"].items():
            agg = filters.setdefault(name, {"in": 0, "kept": 0, "dropped": Counter()})
            agg["in"] += f["in"]
            agg["kept"] += f["kept"]
            agg["dropped"].update(f["dropped"])
        for name, h in s["histograms"].items():
            agg = histograms.setdefault(name, {"column": h["column"], "range": h["range"], "counts": [0] * len(h["counts"]),
                                               "sum": 0.0, "n": 0})
            agg["counts"] = [a + b for a, b in zip(agg["counts"], h["counts"])]
            agg["sum"] += h["sum"]
            agg["n"] += h["n"]

    filters = {name: filters[name] for name in sorted(filters, key=FILTER_NAMES.index)}
    for f in filters.values():
        f["dropped"] = dict(sorted(f["dropped"].items()))
    for h in histograms.values():
        h["mean"] = h["sum"] / h["n"] if h["n"] else None
    total["errors"] = dict(sorted(errors.items()))
    total["error_count"] = sum(errors.values())
    total["balanced"] = total["in"] == total["kept"] + total["dropped"] + total["error_count"]
    total["filters"] = filters
    total["templates"] = dict(sorted(templates.items(), key=lambda kv: float(kv[0])))
    total["histograms"] = histograms
    total["reencoded"] = reencoded
    total["stage_seconds"] = dict(stage_seconds)
    total["stage_samples_per_s"] = {
        name: (total["in"] / sec if sec > 0 else None) for name, sec in stage_seconds.items() if sec > 0
    }
    return total


def _markdown(report: dict[str, Any]) -> str:
    t = report["totals"]
    lines = [
        "# Curation report",
        "",
        f"- output: `{report['output']}`",
        f"- shards: {t['shards']} committed ({report['run']['shards_processed']} processed in this run, "
        f"{report['run']['shards_skipped']} already committed)",
        f"- samples: in {t['in']} = kept {t['kept']} + dropped {t['dropped']} + errors {t['error_count']}"
        f" ({'balanced' if t['balanced'] else 'NOT BALANCED'})",
        f"- wall time of this run: {report['run']['wall_seconds']:.2f} s",
        "",
        "## Filters (execution order)",
        "",
        "| filter | in | kept | dropped | reasons |",
        "|---|---:|---:|---:|---|",
    ]
    for name, f in t["filters"].items():
        reasons = ", ".join(f"{k}: {v}" for k, v in f["dropped"].items()) or "-"
        lines.append(f"| {name} | {f['in']} | {f['kept']} | {f['in'] - f['kept']} | {reasons} |")
    lines += ["", "## Errors", "", "| type | count |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in t["errors"].items()] or ["| - | 0 |"]
    lines += ["", "## Kept samples per aspect-ratio template (h/w)", "", "| template | kept |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in t["templates"].items()] or ["| - | 0 |"]
    lines += ["", "## Throughput per stage (samples per worker-second)", "", "| stage | seconds | samples/s |", "|---|---:|---:|"]
    for name, sec in t["stage_seconds"].items():
        rate = t["stage_samples_per_s"].get(name)
        lines.append(f"| {name} | {sec:.3f} | {rate:.1f} |" if rate else f"| {name} | {sec:.3f} | - |")
    if t["histograms"]:
        lines += ["", "## Score histograms", ""]
        for name, h in t["histograms"].items():
            mean = f"{h['mean']:.3f}" if h["mean"] is not None else "-"
            lines.append(f"- {name} (`{h['column']}`, range {h['range']}, n={h['n']}, mean {mean}): "
                         f"![{name}]({name}_histogram.png) counts {h['counts']}")
    if report.get("splits"):
        lines += ["", "## Split files", "", "| template | lines |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in report["splits"].items()]
    return "\n".join(lines) + "\n"


def _plots(report: dict[str, Any], folder: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; skipping histogram PNGs (pip install 'infinity-data[mlflow]')")
        return []
    paths = []
    for name, h in report["totals"]["histograms"].items():
        low, high = h["range"]
        bins = len(h["counts"])
        width = (high - low) / bins
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar([low + (i + 0.5) * width for i in range(bins)], h["counts"], width=width * 0.9)
        ax.set_xlabel(h["column"])
        ax.set_ylabel("samples")
        ax.set_title(f"{name} (n={h['n']})")
        fig.tight_layout()
        path = folder / f"{name}_histogram.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(
    config: CurateConfig, layout: OutputLayout, shard_names: list[str], run: dict[str, Any],
    splits: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Aggregate all committed shard stats (in input order) and write ``report/report.{json,md}`` + PNGs.

    ``report.json`` is written last: a finished run is recognised by it, so a run killed while writing the report
    leaves no ``report.json`` and the next run writes the whole report again.
    """
    stats = [layout.load_stats(name) for name in shard_names if layout.stats_path(name).is_file()]
    report = {"output": str(layout.root), "run": run, "totals": aggregate(stats), "splits": splits or {}}
    report["shards"] = [
        {k: s[k] for k in ("shard", "in", "kept", "dropped", "errors", "templates")} for s in stats
    ]
    (layout.report / "report.json").unlink(missing_ok=True)
    _write_atomic(layout.report / "report.md", _markdown(report).encode())
    if config.report.plots:
        _plots(report, layout.report)
    _write_atomic(layout.report / "report.json", json.dumps(report, indent=1).encode())
    return report


def run_params(config: CurateConfig) -> dict[str, Any]:
    """Every setting of the run as a flat ``section.key`` dict (filter thresholds, bucketing, dedup, ...)."""
    return flatten(config.to_dict())


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The run totals, per-filter ``filter.<name>.in|kept|dropped`` (+ ``.dropped.<reason>``) and stage throughput."""
    t = report["totals"]
    metrics = {"in": t["in"], "kept": t["kept"], "dropped": t["dropped"], "errors": t["error_count"],
               "wall_seconds": report["run"]["wall_seconds"]}
    for name, f in t["filters"].items():
        metrics[f"filter.{name}.in"] = f["in"]
        metrics[f"filter.{name}.kept"] = f["kept"]
        metrics[f"filter.{name}.dropped"] = f["in"] - f["kept"]
        for reason, count in f["dropped"].items():
            metrics[f"filter.{name}.dropped.{reason}"] = count
    for name, rate in t["stage_samples_per_s"].items():
        if rate:
            metrics[f"stage.{name}.samples_per_s"] = rate
    return {k: float(v) for k, v in metrics.items()}


def log_report(tracker: Tracker, report: dict[str, Any], folder: Path) -> None:
    """Log the report's metrics (step 0) and the report folder (``report/`` artifacts) to ``tracker``."""
    tracker.log_metrics(report_metrics(report), step=0)
    tracker.log_artifact(folder, "report")
