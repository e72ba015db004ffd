"""DPG-Bench (ELLA, arXiv 2403.05135): 1,065 dense prompts, each with a graph of yes/no questions answered by a VQA
model on the generated images.

Protocol (TencentQQGYLab/ELLA ``dpg_bench/compute_dpg_bench.py`` @ 3c228f1, re-implemented here):

* an image file per prompt holds 4 samples tiled 2×2 (named after the prompt's id, e.g. ``partiprompts97.png``);
  each tile of side ``resolution`` (default: half the grid's width) is scored on its own;
* a question scores 1 when the VQA answer is exactly ``"yes"``; it is then zeroed when any of its parent questions
  (``dependency``; 0 = none) has score 0, in question order, so zeros cascade down the graph;
* tile score = mean over the prompt's questions; prompt score = mean over the tiles; **overall = 100 × mean over
  prompts**; category scores (L2 = the tuple's text before ``(``, e.g. ``entity - whole``; L1 = its part before ``-``)
  = 100 × mean of the final question scores over all tiles and prompts.

``compat_ella=True`` reproduces two defects of the upstream script, for comparing with numbers made by it: the first
data row of the CSV is skipped (ELLA#61), and category scores use the last tile's answers before dependency zeroing
(ELLA#60). With it, a prompt whose graph names the skipped question fails as upstream does and is left out.

The prompts are vendored (``data/dpg_bench_prompts.json``); the question graph (ELLA's ``dpg_bench.csv``, ~4 MiB,
columns :data:`CSV_COLUMNS`) is read from a local path, downloaded once beforehand by :func:`fetch_questions`
(``infinity-eval fetch-dpg OUT.csv``), never at run time. The benchmark's VQA model (ModelScope mPLUG-large) has no
transformers implementation; :class:`BlipVQA` runs a transformers BLIP VQA model instead and its numbers are reported
as ``dpg_blip``, never ``dpg``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

PROMPTS_FILE = Path(__file__).parent / "data" / "dpg_bench_prompts.json"
ELLA_COMMIT = "3c228f1dc6c4d3cad0a47493816151a419f14db3"
NUM_PROMPTS = 1065
CSV_COLUMNS = ("item_id", "text", "keywords", "proposition_id", "dependency", "category_broad", "category_detailed",
               "tuple", "question_natural_language")
# Pinned to the commit the prompts come from; `infinity-eval fetch-dpg --url` takes another copy.
DEFAULT_QUESTIONS_URL = f"https://raw.githubusercontent.com/TencentQQGYLab/ELLA/{ELLA_COMMIT}/dpg_bench/dpg_bench.csv"
TILE_ORIGINS = ((0, 0), (1, 0), (0, 1), (1, 1))  # (column, row) of the 4 tiles, in the upstream order


def load_prompts() -> dict[str, str]:
    """The 1,065 DPG-Bench prompts, ``{prompt id (file stem): prompt}`` (byte-exact, including stray whitespace)."""
    return json.loads(PROMPTS_FILE.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Question:
    """One node of a prompt's question graph."""

    item_id: str
    qid: int
    parents: tuple[int, ...]
    tuple_text: str
    question: str

    @property
    def category(self) -> str:
        """The L2 category, e.g. ``entity - whole``."""
        return self.tuple_text.split("(")[0].strip()

    @property
    def l1(self) -> str:
        """The L1 category: entity, attribute, relation, global or other."""
        return self.category.split("-")[0].strip()


def load_questions(path: str | Path, *, compat_ella: bool = False, source: str | None = None) -> dict[str, list[Question]]:
    """The question graph of each prompt from ELLA's ``dpg_bench.csv`` (``{item_id: questions in file order}``).

    Rejects a missing column, an empty item id, a non-integer id or dependency, a repeated question id, and (unless
    ``compat_ella``) a dependency on a question the prompt does not have. ``source`` names the file in errors
    (default: ``path``).
    """
    path = Path(path)
    where = source or str(path)
    if not path.is_file():
        raise FileNotFoundError(f"DPG-Bench question file not found: {path} (ELLA's dpg_bench/dpg_bench.csv; "
                                "`infinity-eval fetch-dpg OUT.csv` downloads it)")
    graph: dict[str, list[Question]] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is not part of a name
            reader = csv.DictReader(handle)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{where}: missing columns {missing}; expected ELLA's dpg_bench.csv with {list(CSV_COLUMNS)}")
            for index, row in enumerate(reader):
                line = index + 2
                if compat_ella and index == 0:
                    continue  # ELLA#61: the upstream loop skips its first data row
                if not (row["item_id"] or "").strip():
                    raise ValueError(f"{where}:{line}: empty item_id")
                try:
                    qid = int(row["proposition_id"])
                    parents = tuple(int(p.strip()) for p in row["dependency"].split(","))
                except (ValueError, AttributeError) as exc:
                    raise ValueError(f"{where}:{line}: proposition_id and dependency must be integers ({exc})") from exc
                questions = graph.setdefault(row["item_id"], [])
                if any(q.qid == qid for q in questions):
                    raise ValueError(f"{where}:{line}: question {qid} of {row['item_id']!r} appears twice")
                questions.append(Question(row["item_id"], qid, parents, row["tuple"], row["question_natural_language"]))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where} is not a UTF-8 CSV file ({exc})") from exc
    if not graph:
        raise ValueError(f"{where} holds no questions")
    if not compat_ella:
        for item, questions in graph.items():
            ids = {q.qid for q in questions}
            for q in questions:
                unknown = [p for p in q.parents if p != 0 and p not in ids]
                if unknown:
                    raise ValueError(f"{where}: question {q.qid} of {item!r} depends on unknown questions {unknown}")
    return graph


@dataclass(frozen=True)
class FetchedQuestions:
    """What :func:`fetch_questions` wrote (or found): the file, its digest, and the graph's size."""

    path: Path
    sha256: str
    prompts: int
    questions: int
    unknown_items: tuple[str, ...]
    """Item ids that are not DPG-Bench prompt ids (:func:`load_prompts`); their questions are never asked."""
    downloaded: bool


def fetch_questions(out: str | Path, *, url: str = DEFAULT_QUESTIONS_URL, force: bool = False,
                    timeout: float = 120.0) -> FetchedQuestions:
    """Download DPG-Bench's question graph once (setup, never at run time) into ``out``.

    The file is checked like :func:`load_questions` does (header, integer ids, every dependency an existing question
    of the same prompt) before it is moved into place atomically, so ``out`` is either absent or valid. An existing
    ``out`` is validated and kept (``force`` downloads again). ``url`` may be any URL urllib opens (``file://`` too).
    """
    out = Path(out)
    if out.exists() and not force:
        return _fetched(out, load_questions(out), downloaded=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
    except (OSError, ValueError) as exc:  # URLError / HTTPError are OSErrors; ValueError: not a URL
        reason = getattr(exc, "reason", None) or exc
        raise ValueError(f"could not download the DPG-Bench question graph from {url}: {reason}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(out.name + ".partial")
    staging.write_bytes(payload)
    try:
        graph = load_questions(staging, source=url)
    except ValueError:
        staging.unlink()
        raise
    os.replace(staging, out)
    logger.info("DPG-Bench question graph from %s written to %s", url, out)
    return _fetched(out, graph, downloaded=True)


def _fetched(path: Path, graph: dict[str, list[Question]], *, downloaded: bool) -> FetchedQuestions:
    known = set(load_prompts())
    unknown = tuple(sorted(item for item in graph if item not in known))
    if unknown:
        logger.warning("%s: %d item ids are not DPG-Bench prompt ids, e.g. %s", path, len(unknown), list(unknown[:3]))
    return FetchedQuestions(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), prompts=len(graph),
                            questions=sum(len(q) for q in graph.values()), unknown_items=unknown, downloaded=downloaded)


def question_scores(questions: Sequence[Question], answers: Sequence[str]) -> tuple[list[float], list[float]]:
    """``(raw, final)`` scores of one tile: raw = answer is exactly ``"yes"``; final = raw zeroed when a parent's
    final score is 0 (parents are looked up as the graph is walked in order, so zeros cascade). A parent id the
    prompt lacks raises ``KeyError``, as upstream."""
    if len(answers) != len(questions):
        raise ValueError(f"{len(answers)} answers for {len(questions)} questions")
    raw = [float(a == "yes") for a in answers]
    final = dict(zip((q.qid for q in questions), raw))
    for q in questions:
        for parent in q.parents:
            if parent == 0:
                continue
            if final[parent] == 0:
                final[q.qid] = 0.0
                break
    return raw, [final[q.qid] for q in questions]


@dataclass
class PromptScore:
    """DPG result of one prompt's grid: per-tile scores and per-tile (raw, final) question scores."""

    item_id: str
    questions: list[Question]
    tile_raw: list[list[float]] = field(default_factory=list)
    tile_final: list[list[float]] = field(default_factory=list)

    @property
    def tile_scores(self) -> list[float]:
        return [float(np.mean(f)) for f in self.tile_final]

    @property
    def score(self) -> float:
        return float(np.mean(self.tile_scores))


def score_prompt(questions: Sequence[Question], tile_answers: Sequence[Sequence[str]]) -> PromptScore:
    """Score one prompt from the VQA answers of each tile (``tile_answers[t][i]`` answers ``questions[i]``)."""
    if not tile_answers:
        raise ValueError("no tiles to score")
    result = PromptScore(item_id=questions[0].item_id, questions=list(questions))
    for answers in tile_answers:
        raw, final = question_scores(questions, answers)
        result.tile_raw.append(raw)
        result.tile_final.append(final)
    return result


def summarize(results: Sequence[PromptScore], *, name: str = "dpg", compat_ella: bool = False) -> dict[str, float]:
    """``<name>/overall`` (100 × mean prompt score), ``<name>/L1/<category>`` and ``<name>/L2/<category>``."""
    if not results:
        raise ValueError("no prompts scored")
    by_l1: dict[str, list[float]] = {}
    by_l2: dict[str, list[float]] = {}
    for result in results:
        # compat: the last tile, before dependency zeroing (ELLA#60); default: every tile, after it
        tiles = [result.tile_raw[-1]] if compat_ella else result.tile_final
        for scores in tiles:
            for q, s in zip(result.questions, scores):
                by_l1.setdefault(q.l1, []).append(s)
                by_l2.setdefault(q.category, []).append(s)
    out = {f"{name}/overall": 100.0 * float(np.mean([r.score for r in results]))}
    out.update({f"{name}/L1/{k}": 100.0 * float(np.mean(v)) for k, v in sorted(by_l1.items())})
    out.update({f"{name}/L2/{k}": 100.0 * float(np.mean(v)) for k, v in sorted(by_l2.items())})
    return out


def grid_tiles(image: Image.Image, *, resolution: int | None = None, count: int = 4) -> list[Image.Image]:
    """The first ``count`` tiles of a 2×2 grid, in the upstream order (top-left, top-right, bottom-left,
    bottom-right); ``resolution`` defaults to half the grid's width."""
    if not 1 <= count <= 4:
        raise ValueError(f"a DPG grid has 1 to 4 tiles, got count={count}")
    side = resolution or image.width // 2
    if side < 1 or 2 * side > image.width or 2 * side > image.height:
        raise ValueError(f"a {image.width}x{image.height} image is not a 2x2 grid of {side}-pixel tiles")
    return [image.crop((c * side, r * side, (c + 1) * side, (r + 1) * side)) for c, r in TILE_ORIGINS[:count]]


class VQABackend(Protocol):
    """A visual-question-answering model: one short answer per (image, question) pair."""

    metric_name: str

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]: ...


def score_grid(image: Image.Image, questions: Sequence[Question], vqa: VQABackend, *, resolution: int | None = None,
               tiles: int = 4) -> PromptScore:
    """Ask every question of one prompt about every tile of its grid image."""
    answers = []
    for tile in grid_tiles(image.convert("RGB"), resolution=resolution, count=tiles):
        answers.append(vqa.answer([tile] * len(questions), [q.question for q in questions]))
    return score_prompt(questions, answers)


def evaluate_folder(folder: str | Path, questions_csv: str | Path, vqa: VQABackend, *, resolution: int | None = None,
                    tiles: int = 4, compat_ella: bool = False, allow_incomplete: bool = False) -> tuple[dict[str, float], list[PromptScore]]:
    """Score a folder of grid images named ``<prompt id>.<png|jpg|webp>``; metrics are named by ``vqa.metric_name``.
    Every prompt of the question file needs an image unless ``allow_incomplete``."""
    graph = load_questions(questions_csv, compat_ella=compat_ella)
    images = {p.stem: p for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")}
    unknown = sorted(set(images) - set(graph))
    if unknown:
        raise ValueError(f"{folder}: images for prompts the question file lacks: {unknown[:5]}")
    missing = sorted(set(graph) - set(images))
    if missing and not allow_incomplete:
        raise ValueError(f"{folder}: {len(missing)} of {len(graph)} prompts have no image (e.g. {missing[:3]}); "
                         "pass allow_incomplete to score what exists")
    results = []
    for item in sorted(images):
        with Image.open(images[item]) as image:
            try:
                results.append(score_grid(image, graph[item], vqa, resolution=resolution, tiles=tiles))
            except KeyError as exc:
                if not compat_ella:
                    raise
                logger.warning("%s: question graph names missing question %s; left out as upstream does", item, exc)
    return summarize(results, name=vqa.metric_name, compat_ella=compat_ella), results


@dataclass
class BlipVQA:
    """A transformers ``BlipForQuestionAnswering`` (e.g. Salesforce/blip-vqa-base saved locally). Not the
    benchmark's mPLUG, so its DPG numbers are named ``dpg_blip``."""

    model: Any
    processor: Any
    max_new_tokens: int = 10
    metric_name: str = "dpg_blip"

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: str = "cpu") -> BlipVQA:
        try:
            from transformers import BlipForQuestionAnswering, BlipProcessor
        except ImportError as exc:
            raise ImportError("the BLIP VQA backend needs transformers: pip install 'infinity-eval[models]'") from exc
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: no BLIP VQA model (config.json) here; save one with save_pretrained")
        model = BlipForQuestionAnswering.from_pretrained(folder, local_files_only=True).to(device).eval()
        return cls(model=model, processor=BlipProcessor.from_pretrained(folder, local_files_only=True))

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        import torch

        inputs = self.processor(images=list(images), text=list(questions), return_tensors="pt", padding=True)
        inputs = inputs.to(self.model.device)
        with torch.inference_mode():
            tokens = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return [a.strip().lower() for a in self.processor.batch_decode(tokens, skip_special_tokens=True)]

