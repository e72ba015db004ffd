"""``infinity-eval run``: generate (resumably) → check completeness → score (cached, local or Ray) → aggregate.

Output folder layout::

    <out>/<benchmark>/images/...            generated images (GenEval: upstream layout with metadata.jsonl)
    <out>/<benchmark>/images/prompts.jsonl  the prompt ids/prompts the images were made for (flat layout)
    <out>/<benchmark>/scores/<metric>.jsonl per-image rows, appended as scored (the resume cache)
    <out>/results.json                      metrics, CIs and params of the run (deterministic)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from infinity_eval.benchmarks import PromptRecord, SampleRef, load_prompts, prompts_digest, sample_refs
from infinity_eval.bootstrap import bootstrap_ci
from infinity_eval.generate import generate_missing, load_generator
from infinity_eval.geneval.folders import collect_images
from infinity_eval.geneval.prompts import write_prompt_folder
from infinity_eval.geneval.scoring import summarize
from infinity_eval.geneval_convert import geneval_metric_name
from infinity_eval.images import check_image_sizes
from infinity_eval.results import MetricResult, SuiteResult, rows_table
from infinity_eval.scorers import MetricSpec, build_metric
from infinity_eval.suites import BenchmarkConfig, RunConfig
from infinity_eval.tracking import log_suite
from infinity_eval.weights import WeightsConfig, entries_for, entry_digest, missing_files

logger = logging.getLogger(__name__)

SEED_POLICY = "sha256(benchmark|prompt_id|sample_index|seed)[:8]"


def package_versions() -> dict[str, str]:
    """Versions of the packages that define the numbers."""
    out = {}
    for name in ("infinity-eval", "bitwise-ar", "bsq-tokenizer", "torch", "transformers", "numpy", "scipy", "pillow"):
        try:
            out[f"version/{name}"] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def weight_digests(metrics: Sequence[str], weights: WeightsConfig, cache: Path) -> dict[str, str]:
    """sha256 of the weights each metric uses (cached by path, size and mtime)."""
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    out = {}
    for metric in metrics:
        for entry in entries_for(metric):
            path = weights.path(entry.name)
            if missing_files(entry, path):
                continue
            stat = path.stat()
            key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
            if key not in known:
                known[key] = entry_digest(entry, path)
            out[f"weights/{entry.name}"] = known[key]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(known, indent=1, sort_keys=True))
    return out


def _image_root(cfg: RunConfig, bench: BenchmarkConfig) -> Path:
    if cfg.score_only is None:
        return cfg.out / bench.name / "images"
    nested = cfg.score_only / bench.name
    if nested.is_dir():
        return nested
    if len(cfg.suite.benchmarks) == 1:
        return cfg.score_only
    raise FileNotFoundError(f"--score-only {cfg.score_only}: expected a subfolder {bench.name}/ for this multi-benchmark suite")


def _write_prompt_manifest(root: Path, bench: BenchmarkConfig, records: Sequence[PromptRecord]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if bench.layout == "geneval":
        for r in records:
            write_prompt_folder(root, r.index, r.metadata)
    elif bench.layout == "hps":
        return  # hpsv2's layout is defined by the prompt files themselves (<style>/<idx>)
    else:
        # scalar prompt metadata (e.g. the ShapesT2I task) travels along: readers such as infinity-preference
        # group results by it
        lines = [json.dumps({"id": r.prompt_id, "prompt": r.prompt, **_scalars(r.metadata)}) for r in records]
        (root / "prompts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _scalars(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k not in ("id", "prompt") and isinstance(v, str | int | float | bool)}


def _check_prompt_manifest(root: Path, bench: BenchmarkConfig, records: Sequence[PromptRecord], allow_incomplete: bool) -> None:
    if bench.layout == "geneval":
        collect_images(root, [r.metadata for r in records], images_per_prompt=bench.images_per_prompt,
                       allow_incomplete=True)  # raises on a prompts-file mismatch or stray files; counts checked later
        return
    if bench.layout == "hps":
        return
    manifest = root / "prompts.jsonl"
    if not manifest.is_file():
        logger.warning("%s has no prompts.jsonl; cannot check that images match the prompt set", root)
        return
    stored = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    stored_map = {str(s["id"]): s["prompt"] for s in stored}
    for r in records:
        if r.prompt_id in stored_map and stored_map[r.prompt_id] != r.prompt:
            raise ValueError(f"prompts file mismatch in {manifest}: id {r.prompt_id} is {stored_map[r.prompt_id]!r}, "
                             f"the benchmark's prompt is {r.prompt!r}")
    absent = [r.prompt_id for r in records if r.prompt_id not in stored_map]
    if absent and not allow_incomplete:
        raise ValueError(f"prompts file mismatch: {manifest} lacks {len(absent)} of the benchmark's prompt ids, e.g. {absent[0]}")


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def score_with_cache(spec: MetricSpec, refs: Sequence[SampleRef], cache_file: Path, cfg: RunConfig, *,
                     on_chunk: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Rows for ``refs`` in order; rows already in ``cache_file`` for the same image bytes are reused.

    Items are scored in fixed chunks of ``cfg.chunk_size`` (by canonical index) in-process or on Ray actors; each
    finished chunk is appended to the cache at once, so an interrupted run loses at most the chunks in flight.
    ``on_chunk`` is called with each chunk index after it is stored (progress hooks, fault injection in tests).
    """
    keys = [f"{r.record.prompt_id}|{r.sample_index}|{_file_sha(r.path)}" for r in refs]
    cached: dict[str, dict[str, Any]] = {}
    if cache_file.is_file():
        for line in cache_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                cached[entry["key"]] = entry["row"]
    chunks = [list(range(i, min(i + cfg.chunk_size, len(refs)))) for i in range(0, len(refs), cfg.chunk_size)]
    todo = [c for c, idx in enumerate(chunks) if any(keys[i] not in cached for i in idx)]
    if len(todo) < len(chunks):
        logger.info("%s: %d of %d chunks already scored (cache %s)", spec.name, len(chunks) - len(todo), len(chunks), cache_file)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    chunk_refs = [[refs[i] for i in idx] for idx in chunks]

    def store(c: int, rows: list[dict[str, Any]]) -> None:
        with open(cache_file, "a", encoding="utf-8") as fh:
            for i, row in zip(chunks[c], rows):
                fh.write(json.dumps({"key": keys[i], "row": row}, sort_keys=True) + "\n")
                cached[keys[i]] = row
            fh.flush()
            os.fsync(fh.fileno())
        if on_chunk is not None:
            on_chunk(c)

    bar = tqdm(total=len(todo), desc=f"score {spec.name}", disable=not cfg.progress)
    if todo and cfg.workers > 0:
        from infinity_eval.distributed import score_chunks_ray

        for c, rows in score_chunks_ray(spec, cfg.weights, chunk_refs, todo, workers=cfg.workers, cache_dir=cfg.out):
            store(c, rows)
            bar.update(1)
    elif todo:
        metric = build_metric(spec, cfg.weights, cache_dir=cfg.out)
        for c in todo:
            store(c, metric.score(chunk_refs[c]))
            bar.update(1)
    bar.close()
    # Round-trip through JSON so fresh and cached rows are indistinguishable (byte-identical results on resume).
    return [json.loads(json.dumps(cached[k], sort_keys=True)) for k in keys]


def run_suite(cfg: RunConfig, *, on_chunk: Callable[[int], None] | None = None) -> SuiteResult:
    """Run a suite end to end (see module docstring); logs to MLflow when ``cfg.tracking.kind = "mlflow"``."""
    for spec in (m for b in cfg.suite.benchmarks for m in b.metrics if m.name == "geneval"):
        # a `geneval` label on another detector is refused before anything is generated
        geneval_metric_name(cfg.weights.path("geneval_detector"), spec.options.get("label"))
    cfg.out.mkdir(parents=True, exist_ok=True)
    generator = None
    params: dict[str, str] = {"suite": cfg.suite.name, "seed": str(cfg.seed), "seed_policy": SEED_POLICY,
                              "mode": "score-only" if cfg.score_only else "generate+score", **package_versions()}
    if cfg.model is not None:
        options = dict(cfg.generation)
        if "image_size" in options:
            options["image_size"] = tuple(options["image_size"])
        generator = load_generator(cfg.model, device=cfg.device, **options)
        params.update({f"model/{k}": v for k, v in generator.describe().items()})
    else:
        params["model/score_only"] = str(cfg.score_only)
    all_metrics = sorted({m.name for b in cfg.suite.benchmarks for m in b.metrics})
    params.update(weight_digests(all_metrics, cfg.weights, cfg.out / ".weights_digests.json"))
    results: list[MetricResult] = []
    complete = True
    roots: dict[str, Path] = {}
    for bench in cfg.suite.benchmarks:
        records = load_prompts(bench.prompts, limit=cfg.limit)
        if bench.expected_prompts is not None and len(records) != bench.expected_prompts:
            complete = False
            if cfg.limit is None and not cfg.allow_incomplete:
                raise ValueError(f"{bench.name}: the prompt set has {len(records)} prompts, the protocol has "
                                 f"{bench.expected_prompts}; pass --allow-incomplete to score it anyway")
        root = _image_root(cfg, bench)
        roots[bench.name] = root
        refs = sample_refs(bench.name, records, bench.images_per_prompt, root, layout=bench.layout, global_seed=cfg.seed)
        if generator is not None:
            _write_prompt_manifest(root, bench, records)
            generate_missing(generator, refs, progress=cfg.progress)
        else:
            if not root.is_dir():
                raise FileNotFoundError(f"image folder not found: {root}")
            _check_prompt_manifest(root, bench, records, cfg.allow_incomplete)
        present = [r for r in refs if r.path.is_file()]
        if len(present) < len(refs):
            complete = False
            missing = next(r.path for r in refs if not r.path.is_file())
            if not cfg.allow_incomplete:
                raise ValueError(f"{bench.name}: {len(refs) - len(present)} of {len(refs)} images missing, e.g. {missing}. "
                                 "Finish generation or pass --allow-incomplete.")
            logger.warning("%s: scoring %d of %d images (--allow-incomplete)", bench.name, len(present), len(refs))
        if not present:
            raise ValueError(f"{bench.name}: no images to score in {root}")
        expected_size = None
        if "image_size" in cfg.generation:
            h, w = cfg.generation["image_size"]
            expected_size = (int(w), int(h))
        check_image_sizes([r.path for r in present], expected=expected_size)
        params[f"prompts/{bench.name}"] = prompts_digest(records)
        params[f"images_per_prompt/{bench.name}"] = str(bench.images_per_prompt)
        for spec in bench.metrics:
            params[f"metric/{bench.name}/{spec.name}"] = json.dumps(dict(spec.options), sort_keys=True, default=str)
            cache = cfg.out / bench.name / "scores" / f"{spec.name}.jsonl"
            rows = score_with_cache(spec, present, cache, cfg, on_chunk=on_chunk)
            metric = build_metric(spec, cfg.weights, cache_dir=cfg.out)
            values = metric.aggregate(rows)
            if spec.name == "geneval":
                # Upstream summary_scores.py's table, next to the per-image rows.
                (cfg.out / bench.name / "geneval_summary.txt").write_text(summarize(rows).table() + "\n")
            headline = metric.headline(rows)
            ci = None
            if headline is not None and cfg.bootstrap_samples > 0:
                ci = bootstrap_ci(rows, lambda rs, m=metric: float(m.headline(rs)),  # type: ignore[misc]
                                  strata_key="tag" if spec.name in ("geneval", "shapes") else None,
                                  num_samples=cfg.bootstrap_samples, seed=cfg.seed)
            results.append(MetricResult(benchmark=bench.name, metric=getattr(metric, "name", spec.name), metrics=values,
                                        headline=headline, ci95=ci, rows=rows, num_images=len(rows),
                                        image_paths=[r.path for r in present]))
    params["complete"] = str(complete).lower()
    suite_result = SuiteResult(suite=cfg.suite.name, out=cfg.out, complete=complete, params=params, results=results,
                               image_roots=roots)
    write_results(suite_result)
    if cfg.tracking.kind != "none":
        run_id = log_suite(suite_result, cfg.tracking)
        suite_result.params["mlflow_run_id"] = run_id
    return suite_result


def write_results(result: SuiteResult) -> Path:
    """``results.json``: metrics, CIs, per-benchmark counts and params (sorted keys; no timestamps)."""
    payload = {
        "suite": result.suite,
        "complete": result.complete,
        "metrics": result.flat_metrics(),
        "results": [{"benchmark": r.benchmark, "metric": r.metric, "headline": r.headline,
                     "ci95": list(r.ci95) if r.ci95 else None, "num_images": r.num_images} for r in result.results],
        "params": {k: v for k, v in result.params.items() if not k.startswith("version/")},
    }
    path = result.out / "results.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


__all__ = ["MetricResult", "SuiteResult", "rows_table", "run_suite", "score_with_cache"]
