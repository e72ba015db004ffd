"""Reading the images an ``infinity-eval run`` cached, and matching several runs slot for slot.

An eval run folder (``infinity-eval run --out RUN``; layout in ``infinity_eval.runner``) holds::

    RUN/results.json                             params: "seed" (the global seed), "images_per_prompt/<bench>",
                                                 "model/model" (the model folder), "model/score_only"
    RUN/<bench>/images/prompts.jsonl             flat layout: {"id", "prompt", ...scalar prompt metadata}
    RUN/<bench>/images/<prompt_id>/<nnnn>.png    flat layout: sample nnnn of a prompt
    RUN/<bench>/images/<NNNNN>/metadata.jsonl    GenEval layout: the prompt's record (with its "tag")
    RUN/<bench>/images/<NNNNN>/samples/<nnnn>.png

Every image's seed is a function of (benchmark, prompt id, sample index, global seed) (``infinity_eval.benchmarks.
sample_seed``), so two runs drew each image from the same seed exactly when their benchmark, global seed, prompt ids
and sample indices agree: that is what :func:`match_runs` checks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CATEGORY_KEYS",
    "EvalRunImages",
    "PromptInfo",
    "StudySlots",
    "load_eval_run",
    "match_runs",
    "parse_run_spec",
]

CATEGORY_KEYS = ("category", "tag", "task", "style")
"""Prompt metadata keys read as the prompt's category, first found wins (GenEval's "tag", ShapesT2I's "task")."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True, kw_only=True)
class PromptInfo:
    """One prompt of a run: its text and category ("" when the run's metadata has none)."""

    text: str
    category: str = ""


@dataclass(frozen=True, kw_only=True)
class EvalRunImages:
    """The cached images of one benchmark of one eval run."""

    path: Path
    label: str
    benchmark: str
    seed: str
    images_per_prompt: int
    prompts: dict[str, PromptInfo]
    images: dict[tuple[str, int], Path] = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class StudySlots:
    """Runs that match slot for slot: ``images[run_index][(prompt_id, sample)]``."""

    runs: tuple[EvalRunImages, ...]
    benchmark: str
    seed: str
    prompts: dict[str, PromptInfo]
    slots: tuple[tuple[str, int], ...]


def parse_run_spec(spec: str) -> tuple[str | None, str]:
    """``LABEL=PATH`` or ``PATH`` -> (label or None, path)."""
    if "=" in spec and not Path(spec).exists():
        label, path = spec.split("=", 1)
        if not label.strip():
            raise ValueError(f"run {spec!r}: empty label before '='; use LABEL=PATH or PATH")
        return label.strip(), path
    return None, spec


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a JSON {what}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON {what} (expected an object)")
    return data


def _category(metadata: dict) -> str:
    for key in CATEGORY_KEYS:
        value = metadata.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool) and str(value):
            return str(value)
    return ""


def _find_image(stem: Path) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        if stem.with_suffix(suffix).is_file():
            return stem.with_suffix(suffix)
    return None


def _image_root(run: Path, benchmark: str, params: dict) -> Path:
    root = run / benchmark / "images"
    if root.is_dir():
        return root
    scored = params.get("model/score_only")
    if scored and scored != "None" and Path(scored).is_dir():
        return Path(scored) / benchmark if (Path(scored) / benchmark).is_dir() else Path(scored)
    raise FileNotFoundError(f"eval run {run}: no cached images at {root} (nor a score-only image folder)")


def load_eval_run(path: str | Path, *, benchmark: str | None = None, label: str | None = None) -> EvalRunImages:
    """The prompts and image files of one benchmark of an eval run folder (see the module docstring)."""
    run = Path(path)
    if not run.is_dir():
        raise FileNotFoundError(f"eval run folder {run} not found")
    results_file = run / "results.json"
    if not results_file.is_file():
        raise FileNotFoundError(f"{run} is not a finished infinity-eval run: {results_file} is missing")
    results = _read_json(results_file, "results file")
    params = results.get("params") or {}
    benchmarks = sorted({str(r.get("benchmark")) for r in results.get("results", []) if isinstance(r, dict)})
    if benchmark is None:
        if len(benchmarks) != 1:
            raise ValueError(f"eval run {run} has benchmarks {benchmarks}; name one (benchmark=...)")
        benchmark = benchmarks[0]
    elif benchmark not in benchmarks:
        raise ValueError(f"eval run {run} has no benchmark {benchmark!r}; it has {benchmarks}")
    ipp_text = params.get(f"images_per_prompt/{benchmark}")
    if "seed" not in params or ipp_text is None or not str(ipp_text).isdigit():
        raise ValueError(
            f"{results_file}: params lack 'seed' or 'images_per_prompt/{benchmark}' (not an infinity-eval run?)"
        )
    root = _image_root(run, benchmark, params)
    images_per_prompt = int(ipp_text)
    prompts: dict[str, PromptInfo] = {}
    folders: dict[str, Path] = {}
    manifest = root / "prompts.jsonl"
    if manifest.is_file():  # flat layout
        for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{manifest}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or "id" not in row:
                raise ValueError(f"{manifest}:{number}: expected an object with 'id' and 'prompt'")
            prompt_id = str(row["id"])
            prompts[prompt_id] = PromptInfo(text=row["prompt"], category=_category(row))
            folders[prompt_id] = root / prompt_id
    else:  # GenEval layout: <NNNNN>/metadata.jsonl + samples/
        for meta_file in sorted(root.glob("[0-9][0-9][0-9][0-9][0-9]/metadata.jsonl")):
            lines = meta_file.read_text(encoding="utf-8").splitlines()
            row = json.loads(lines[0]) if lines else {}
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise ValueError(f"{meta_file}: expected a JSON object with a 'prompt'")
            prompt_id = meta_file.parent.name
            prompts[prompt_id] = PromptInfo(text=row["prompt"], category=_category(row))
            folders[prompt_id] = meta_file.parent / "samples"
    if not prompts:
        raise ValueError(f"{root}: neither prompts.jsonl (flat layout) nor <NNNNN>/metadata.jsonl (GenEval layout); "
                         "the hps layout stores no prompt texts and cannot be rated")  # fmt: skip
    images: dict[tuple[str, int], Path] = {}
    missing: list[str] = []
    for prompt_id, folder in folders.items():
        for sample in range(images_per_prompt):
            found = _find_image(folder / f"{sample:04d}.png")
            if found is None:
                missing.append(str(folder / f"{sample:04d}.png"))
            else:
                images[(prompt_id, sample)] = found
    if missing:
        raise ValueError(f"eval run {run}: {len(missing)} of {len(prompts) * images_per_prompt} images missing, "
                         f"e.g. {missing[0]}; finish its generation first")  # fmt: skip
    if label is None:
        model = str(params.get("model/model", "") or "")
        label = Path(model).name if model and model != "None" else run.name
    return EvalRunImages(path=run, label=label, benchmark=benchmark, seed=str(params["seed"]),
                         images_per_prompt=images_per_prompt, prompts=prompts, images=images)  # fmt: skip


def match_runs(runs: Sequence[EvalRunImages]) -> StudySlots:
    """Check that the runs rated against each other hold the same prompts and seeds; one clear error otherwise."""
    if len(runs) < 2:
        raise ValueError(f"a study compares two or more eval runs, got {len(runs)}")
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"model labels must differ, got {labels}; name them with LABEL=PATH")
    first = runs[0]
    for other in runs[1:]:
        where = f"eval runs {first.path} and {other.path}"
        if other.benchmark != first.benchmark:
            raise ValueError(f"{where} are on different benchmarks ({first.benchmark!r} vs {other.benchmark!r})")
        if other.seed != first.seed:
            raise ValueError(f"{where} used different seeds (seed={first.seed} vs seed={other.seed}): "
                             "their images were drawn from different noise and cannot be paired")  # fmt: skip
        if other.images_per_prompt != first.images_per_prompt:
            raise ValueError(f"{where} have {first.images_per_prompt} vs {other.images_per_prompt} images per prompt")
        only_first = sorted(set(first.prompts) - set(other.prompts))
        only_other = sorted(set(other.prompts) - set(first.prompts))
        if only_first or only_other:
            raise ValueError(
                f"{where} have different prompt sets: {len(only_first)} prompt ids only in the first "
                f"(e.g. {only_first[:1]}), {len(only_other)} only in the second (e.g. {only_other[:1]})"
            )
        for prompt_id, info in first.prompts.items():
            if other.prompts[prompt_id].text != info.text:
                raise ValueError(f"{where} differ at prompt id {prompt_id}: {info.text!r} vs "
                                 f"{other.prompts[prompt_id].text!r}")  # fmt: skip
    slots = tuple(sorted(first.images))
    return StudySlots(runs=tuple(runs), benchmark=first.benchmark, seed=first.seed, prompts=dict(first.prompts),
                      slots=slots)  # fmt: skip
