"""Metrics behind one interface: score image slots one by one into rows, then aggregate rows into metrics.

Scoring is a pure function of each image (and its prompt), so rows can be computed on any worker, cached on disk and
resumed; aggregation runs once on the driver over rows in canonical order.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from infinity_eval.benchmarks import SampleRef
from infinity_eval.dpg import BlipVQA, PromptScore, load_questions, question_scores
from infinity_eval.dpg import summarize as dpg_summarize
from infinity_eval.geneval.folders import GenEvalItem, score_item
from infinity_eval.geneval.scoring import summarize
from infinity_eval.geneval_convert import geneval_metric_name
from infinity_eval.images import load_image
from infinity_eval.weights import WeightsConfig, check_present

logger = logging.getLogger(__name__)

Row = dict[str, Any]


class Metric(Protocol):
    """A metric: per-image rows, then aggregation (and a statistic for bootstrap CIs)."""

    name: str

    def score(self, refs: Sequence[SampleRef]) -> list[Row]: ...

    def aggregate(self, rows: Sequence[Row]) -> dict[str, float]: ...

    def headline(self, rows: Sequence[Row]) -> float | None: ...


def _base_row(ref: SampleRef) -> Row:
    return {"prompt_id": ref.record.prompt_id, "sample_index": ref.sample_index, "prompt": ref.record.prompt}


@dataclass
class ClipScoreMetric:
    """CLIP score (cosine) with the model given by ``model_id`` in the metric keys."""

    model_dir: Path
    model_id: str = "vitl14"
    name: str = "clip"
    _scorer: Any = field(default=None, repr=False)

    def score(self, refs: Sequence[SampleRef]) -> list[Row]:
        from infinity_eval.clip_score import ClipScorer

        self._scorer = self._scorer or ClipScorer.from_pretrained(self.model_dir, model_id=self.model_id)
        cos = self._scorer.cosines([load_image(r.path) for r in refs], [r.record.prompt for r in refs])
        return [dict(_base_row(r), cos=float(c)) for r, c in zip(refs, cos)]

    def aggregate(self, rows: Sequence[Row]) -> dict[str, float]:
        from infinity_eval.clip_score import clip_score_variants

        return clip_score_variants([r["cos"] for r in rows], self.model_id)

    def headline(self, rows: Sequence[Row]) -> float | None:
        return float(np.mean([r["cos"] for r in rows]))


@dataclass
class ImageRewardMetric:
    """ImageReward v1.0 mean reward."""

    folder: Path
    vit: Any = "large"
    name: str = "imagereward"
    _model: Any = field(default=None, repr=False)

    def score(self, refs: Sequence[SampleRef]) -> list[Row]:
        from infinity_eval.imagereward import ImageReward

        self._model = self._model or ImageReward.from_pretrained(self.folder, vit=self.vit)
        rewards = self._model.score([load_image(r.path) for r in refs], [r.record.prompt for r in refs])
        return [dict(_base_row(r), reward=float(v)) for r, v in zip(refs, rewards)]

    def aggregate(self, rows: Sequence[Row]) -> dict[str, float]:
        return {"imagereward/mean": float(np.mean([r["reward"] for r in rows]))}

    def headline(self, rows: Sequence[Row]) -> float | None:
        return float(np.mean([r["reward"] for r in rows]))


@dataclass
class HPSMetric:
    """HPSv2.1 (×100), per style and average."""

    checkpoint: Path
    tokenizer_dir: Path
    arch: Any = "ViT-H-14"
    name: str = "hpsv21"
    _model: Any = field(default=None, repr=False)

    def score(self, refs: Sequence[SampleRef]) -> list[Row]:
        from infinity_eval.hps import HPSv21

        self._model = self._model or HPSv21.from_checkpoint(self.checkpoint, self.tokenizer_dir, arch=self.arch)
        scores = self._model.score([load_image(r.path) for r in refs], [r.record.prompt for r in refs])
        return [dict(_base_row(r), hps=float(s), style=r.record.metadata.get("style", "all")) for r, s in zip(refs, scores)]

    def aggregate(self, rows: Sequence[Row]) -> dict[str, float]:
        from infinity_eval.hps import aggregate_hps

        by_style: dict[str, list[float]] = {}
        for r in rows:
            by_style.setdefault(r["style"], []).append(r["hps"])
        return aggregate_hps(by_style)

    def headline(self, rows: Sequence[Row]) -> float | None:
        return float(np.mean([r["hps"] for r in rows]))


@dataclass
class GenEvalMetric:
    """GenEval with a Mask2Former detector and the CLIP colour classifier.

    ``name`` is what the scores are reported under (:func:`infinity_eval.geneval_convert.geneval_metric_name`):
    ``geneval`` only for GenEval's own converted detector, ``geneval_hfm2f`` for any other Mask2Former folder (the
    default, ``None``, picks one of the two); ``"geneval"`` for another folder is refused."""

    detector_dir: Path
    clip_dir: Path
    name: str | None = None
    _models: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = geneval_metric_name(self.detector_dir, self.name)

    def score(self, refs: Sequence[SampleRef]) -> list[Row]:
        from infinity_eval.geneval.color import ClipColorClassifier
        from infinity_eval.geneval.detector import Mask2FormerDetector

        if self._models is None:
            self._models = (Mask2FormerDetector.from_pretrained(self.detector_dir, name=self.name),
                            ClipColorClassifier.from_pretrained(self.clip_dir))
        detector, colors = self._models
        rows = []
        for r in refs:
            item = GenEvalItem(prompt_index=r.record.index, sample_index=r.sample_index, path=r.path, metadata=r.record.metadata)
            rows.append(dict(score_item(item, detector, colors), prompt_id=r.record.prompt_id))
        return rows

    def aggregate(self, rows: Sequence[Row]) -> dict[str, float]:
        return summarize(rows).metrics(self.name)

    def headline(self, rows: Sequence[Row]) -> float | None:
        return summarize(rows).overall


@dataclass
class FIDMetric:
    """FID/KID against a reference folder or stored statistics; rows carry pool3 features (base64 float32)."""

    weights: Path
    reference: Path
    mode: str = "clean"
    cache_dir: Path | None = None
    name: str = "fid"
    _model: Any = field(default=None, repr=False)

    def _extractor(self) -> Any:
        from infinity_eval.fid import load_fid_inception

        self._model = self._model or load_fid_inception(self.weights)
        return self._model

    def score(self, refs: Sequence[SampleRef]) -> list[Row]:
        from infinity_eval.fid import extract_features

        feats = extract_features(self._extractor(), [r.path for r in refs], mode=self.mode, progress=False)  # type: ignore[arg-type]
        return [dict(_base_row(r), features=base64.b64encode(f.astype("<f4").tobytes()).decode()) for r, f in zip(refs, feats)]

    def _reference(self) -> tuple[Any, np.ndarray | None]:
        from infinity_eval.fid import FeatureStats, folder_stats
        from infinity_eval.fid.compute import EXTRACTOR_ID

        if Path(self.reference).is_file():
            return FeatureStats.load(self.reference, extractor=EXTRACTOR_ID, mode=self.mode), None
        stats, feats = folder_stats(self.reference, self._extractor(), mode=self.mode, progress=False)  # type: ignore[arg-type]
        if self.cache_dir is not None:
            stats.save(Path(self.cache_dir) / f"fid_reference_{self.mode}.npz", extractor=EXTRACTOR_ID, mode=self.mode)
        return stats, feats

    def aggregate(self, rows: Sequence[Row]) -> dict[str, float]:
        from infinity_eval.fid import FeatureStats, fid_from_stats, kernel_inception_distance

        feats = np.stack([np.frombuffer(base64.b64decode(r["features"]), dtype="<f4") for r in rows])
        ref_stats, ref_feats = self._reference()
        n = len(rows)
        out = {f"fid/{self.mode}/N_{n}": fid_from_stats(FeatureStats.from_features(feats), ref_stats)}
        if ref_feats is not None and n >= 2 and len(ref_feats) >= 2:
            kid, kid_std = kernel_inception_distance(feats, ref_feats, num_subsets=100)
            out[f"kid/{self.mode}/N_{n}"] = kid
            out[f"kid/{self.mode}/N_{n}/std"] = kid_std
        return out

    def headline(self, rows: Sequence[Row]) -> float | None:
        return None  # FID is a set statistic; no per-prompt bootstrap


@dataclass
class ShapesMetric:
    """ShapesEval (infinity_shapes) — the analytic scorer of the ShapesT2I demo task."""

    name: str = "shapes"

    def score(self, refs: Sequence[SampleRef]) -> list[Row]:
        try:
            from infinity_shapes import parse_caption, score_image
        except ImportError as exc:
            raise ImportError("the shapes metric needs infinity-shapes: pip install 'infinity-eval[shapes]'") from exc

        rows = []
        for r in refs:
            result = score_image(load_image(r.path), parse_caption(r.record.prompt))
            rows.append(dict(_base_row(r), tag=result.task, correct=bool(result.correct),
                             checks={k: v for k, v in result.checks.items() if v is not None}))
        return rows

    @staticmethod
    def _overall(rows: Sequence[Row]) -> float:
        by_task: dict[str, list[bool]] = {}
        for r in rows:
            by_task.setdefault(r["tag"], []).append(r["correct"])
        return float(np.mean([np.mean(v) for v in by_task.values()]))

    def aggregate(self, rows: Sequence[Row]) -> dict[str, float]:
        out = {"shapes/overall": self._overall(rows), "shapes/correct_images": float(np.mean([r["correct"] for r in rows]))}
        for tag in sorted({r["tag"] for r in rows}):
            out[f"shapes/{tag}"] = float(np.mean([r["correct"] for r in rows if r["tag"] == tag]))
        return out

    def headline(self, rows: Sequence[Row]) -> float | None:
        return self._overall(rows)


@dataclass
class DPGMetric:
    """DPG-Bench with a transformers BLIP VQA model (``dpg_blip``): each sample image is one of the prompt's tiles
    (the benchmark's 2×2 grid, untiled), scored with the question graph's dependency rule."""

    vqa_dir: Path
    questions: Path
    name: str = "dpg_blip"
    _state: Any = field(default=None, repr=False)

    def _models(self) -> Any:
        if self._state is None:
            self._state = (BlipVQA.from_pretrained(self.vqa_dir), load_questions(self.questions))
        return self._state

    def score(self, refs: Sequence[SampleRef]) -> list[Row]:
        vqa, graph = self._models()
        rows = []
        for r in refs:
            if r.record.prompt_id not in graph:
                raise ValueError(f"{self.questions} has no questions for DPG prompt {r.record.prompt_id!r}")
            questions = graph[r.record.prompt_id]
            raw, final = question_scores(questions, vqa.answer([load_image(r.path)] * len(questions),
                                                               [q.question for q in questions]))
            rows.append(dict(_base_row(r), raw=raw, final=final, score=float(np.mean(final))))
        return rows

    def aggregate(self, rows: Sequence[Row]) -> dict[str, float]:
        _, graph = self._models()
        prompts: dict[str, PromptScore] = {}
        for r in rows:
            result = prompts.setdefault(str(r["prompt_id"]), PromptScore(item_id=str(r["prompt_id"]),
                                                                        questions=graph[str(r["prompt_id"])]))
            result.tile_raw.append(list(r["raw"]))
            result.tile_final.append(list(r["final"]))
        return dpg_summarize(list(prompts.values()), name=self.name)

    def headline(self, rows: Sequence[Row]) -> float | None:
        by_prompt: dict[str, list[float]] = {}
        for r in rows:
            by_prompt.setdefault(str(r["prompt_id"]), []).append(r["score"])
        return 100.0 * float(np.mean([np.mean(v) for v in by_prompt.values()]))


@dataclass(frozen=True, kw_only=True)
class MetricSpec:
    """A picklable recipe for a metric (built inside each worker)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


def _arch(value: Any) -> Any:
    # A preset name, or a table of OpenClipVitConfig fields (from a suite TOML).
    if isinstance(value, Mapping):
        from infinity_eval.hps import OpenClipVitConfig

        return OpenClipVitConfig(**value)
    return value


def _vit(value: Any) -> Any:
    if isinstance(value, Mapping):
        from infinity_eval.imagereward import BlipVitConfig

        return BlipVitConfig(**value)
    return value


def build_metric(spec: MetricSpec, weights: WeightsConfig, *, cache_dir: Path | None = None) -> Metric:
    """Instantiate a metric from its spec; raises ``FileNotFoundError`` listing missing weights first."""
    name, opt = spec.name, dict(spec.options)
    builders: dict[str, Callable[[], Metric]] = {
        "clip": lambda: ClipScoreMetric(weights.path("clip"), model_id=opt.get("model_id", "vitl14")),
        "imagereward": lambda: ImageRewardMetric(weights.path("imagereward"), vit=_vit(opt.get("vit", "large"))),
        "hpsv21": lambda: HPSMetric(weights.path("hps_checkpoint"), weights.path("hps_tokenizer"),
                                    arch=_arch(opt.get("arch", "ViT-H-14"))),
        "geneval": lambda: GenEvalMetric(weights.path("geneval_detector"), weights.path("clip"), name=opt.get("label")),
        "fid": lambda: FIDMetric(weights.path("fid_inception"), Path(opt["reference"]), mode=opt.get("mode", "clean"), cache_dir=cache_dir),
        "shapes": lambda: ShapesMetric(),
        "dpg_blip": lambda: DPGMetric(weights.path("dpg_vqa"), weights.path("dpg_questions")),
    }
    if name not in builders:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(sorted(builders))}")
    if name == "fid" and "reference" not in opt:
        raise ValueError("the fid metric needs options.reference (a folder of reference images or a stats .npz)")
    check_present(name, weights)
    return builders[name]()
