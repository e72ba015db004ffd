"""GenEval: vendored protocol data, scoring on constructed detections for every task, summary, detector plumbing."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from infinity_eval.geneval import (
    Detection,
    GenEvalThresholds,
    evaluate,
    filter_detections,
    load_metadata,
    object_names,
    relative_position,
    summarize,
)
from infinity_eval.geneval.color import BACKGROUND, ClipColorClassifier, color_prompts, object_crop
from infinity_eval.geneval.detector import (
    Mask2FormerDetector,
    instance_postprocess,
    masks_to_boxes,
    mmdet_preprocess,
    rescale_size,
)
from infinity_eval.geneval.folders import collect_images, score_item
from infinity_eval.geneval.prompts import TASK_COUNTS, write_prompt_folder
from infinity_eval.testing import write_tiny_clip, write_tiny_mask2former
from PIL import Image


def _digest(name: str) -> str:
    return hashlib.sha256(resources.files("infinity_eval.geneval").joinpath("data", name).read_bytes()).hexdigest()


def test_vendored_protocol_is_upstream_file() -> None:
    assert _digest("evaluation_metadata.jsonl") == "5c48e0813e812e3c373fa5c8ed07a8f0a483be30272b4427b0559c8048e67c13"
    assert _digest("object_names.txt") == "608f6a0e5c8ca1c7a92b818430141fe268c85b7930b50f4160f1d65893b5bacd"
    rows = load_metadata()
    assert len(rows) == 553 and len({r["prompt"] for r in rows}) == 553
    counts = {t: sum(r["tag"] == t for r in rows) for t in TASK_COUNTS}
    assert counts == TASK_COUNTS
    names = object_names()
    assert len(names) == 80 and names[0] == "person" and "computer mouse" in names and "tv remote" in names
    assert all(c["class"] != "person" for r in rows if r["tag"] == "colors" for c in r["include"])


def test_metadata_validation_errors(tmp_path: Path) -> None:
    bad = tmp_path / "meta.jsonl"
    bad.write_text(json.dumps({"tag": "single_object", "include": [{"class": "unicorn", "count": 1}], "prompt": "x"}) + "\n")
    with pytest.raises(ValueError, match="unknown class 'unicorn'"):
        load_metadata(bad)


def det(x1: float, y1: float, x2: float, y2: float, score: float = 0.95) -> Detection:
    return Detection(box=(x1, y1, x2, y2), score=score)


def test_thresholds_cap_and_counting() -> None:
    raw = {"dog": [det(0, 0, 10, 10, 0.29), det(20, 0, 30, 10, 0.31)]}
    assert [d.score for d in filter_detections(raw, "single_object")["dog"]] == [0.31]
    assert "dog" not in filter_detections(raw, "counting")  # counting needs > 0.9
    many = {"cat": [det(i, 0, i + 5, 5, 0.5 + i / 100) for i in range(17)]}
    kept = filter_detections(many, "two_object")["cat"]
    assert len(kept) == 16 and kept[0].score == pytest.approx(0.66) and min(d.score for d in kept) == pytest.approx(0.51)
    with pytest.raises(ValueError, match="threshold"):
        GenEvalThresholds(threshold=1.5)


def test_single_and_two_object() -> None:
    single = {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}
    assert evaluate({"bench": [det(0, 0, 5, 5)]}, single, None) == (True, "")
    ok, reason = evaluate({}, single, None)
    assert not ok and reason == "expected bench>=1, found 0"
    two = {"tag": "two_object", "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1}], "prompt": "x"}
    assert evaluate({"dog": [det(0, 0, 5, 5)], "cat": [det(9, 9, 12, 12)]}, two, None)[0]
    assert not evaluate({"dog": [det(0, 0, 5, 5)]}, two, None)[0]


def test_counting_exclude_clause() -> None:
    meta = {"tag": "counting", "include": [{"class": "dog", "count": 2}], "exclude": [{"class": "dog", "count": 3}], "prompt": "two dogs"}
    two = filter_detections({"dog": [det(0, 0, 1, 1), det(5, 5, 6, 6), det(9, 9, 10, 10, 0.5)]}, "counting")
    assert evaluate(two, meta, None) == (True, "")
    three = filter_detections({"dog": [det(0, 0, 1, 1), det(5, 5, 6, 6), det(9, 9, 10, 10, 0.95)]}, "counting")
    ok, reason = evaluate(three, meta, None)
    assert not ok and reason == "expected dog<3, found 3"


def test_colors_and_color_attr_use_top_count_objects() -> None:
    calls = []

    def colors(objs, cls):
        calls.append((cls, len(objs)))
        return {"car": ["red"] * len(objs), "apple": ["green"] * len(objs)}[cls]

    meta = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a red car"}
    assert evaluate({"car": [det(0, 0, 5, 5), det(6, 6, 9, 9, 0.5)]}, meta, colors) == (True, "")
    assert calls == [("car", 1)]  # only the most confident object is classified
    attr = {"tag": "color_attr", "prompt": "x", "include": [{"class": "car", "count": 1, "color": "red"},
                                                            {"class": "apple", "count": 1, "color": "black"}]}
    ok, reason = evaluate({"car": [det(0, 0, 5, 5)], "apple": [det(6, 6, 9, 9)]}, attr, colors)
    assert not ok and reason == "expected black apple>=1, found 0 black; and 1 green"
    with pytest.raises(ValueError, match="colour classifier"):
        evaluate({"car": [det(0, 0, 5, 5)]}, meta, None)


def test_relative_position_cases() -> None:
    left, right = det(0, 40, 20, 60), det(80, 40, 100, 60)
    assert relative_position(left, right) == {"left of"}
    assert relative_position(right, left) == {"right of"}
    assert relative_position(det(40, 0, 60, 20), det(40, 80, 60, 100)) == {"above"}
    assert relative_position(det(0, 0, 50, 50), det(5, 5, 55, 55)) == set()  # overlapping: shrunk offset vanishes
    assert relative_position(det(0, 0, 10, 10), det(90, 90, 100, 100)) == {"left of", "above"}  # diagonal
    meta = {"tag": "position", "prompt": "a dog right of a teddy bear",
            "include": [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}]}
    assert evaluate({"teddy bear": [left], "dog": [right]}, meta, None) == (True, "")
    ok, reason = evaluate({"teddy bear": [right], "dog": [left]}, meta, None)
    assert not ok and reason == "expected dog right of target, found left of target"
    ok, reason = evaluate({"dog": [right]}, meta, None)
    assert not ok and "no target for dog" in reason


def test_summary_is_mean_over_tasks() -> None:
    rows = ([{"tag": "single_object", "prompt_id": f"s{i}", "correct": True} for i in range(8)]
            + [{"tag": "position", "prompt_id": "p0", "correct": c} for c in (True, False, False, False)])
    s = summarize(rows)
    assert s.task_scores == {"single_object": 1.0, "position": 0.25}
    assert s.overall == pytest.approx(0.625)  # not the image mean 9/12
    assert s.correct_images == pytest.approx(9 / 12) and s.correct_prompts == 1.0 and s.num_prompts == 9
    assert "Overall score (avg. over tasks): 0.62500" in s.table() and s.metrics()["geneval/position"] == 0.25


def test_mmdet_resize_rule_and_postprocess() -> None:
    assert rescale_size(512, 512) == (800, 800) and rescale_size(1024, 1024) == (800, 800)
    assert rescale_size(640, 480) == (1067, 800) and rescale_size(2000, 500) == (1333, 333)
    x, (h, w) = mmdet_preprocess(Image.new("RGB", (100, 60), (123, 116, 104)))
    assert (h, w) == (800, 1333) and x.shape == (1, 3, 800, 1344) and float(x[0, :, 10, 10].abs().max()) < 0.02
    assert float(x[0, :, 10, 1340].abs().max()) == 0.0  # zero padding to /32
    import torch

    cls_logits = torch.tensor([[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])  # 2 queries, 3 classes + no-object
    masks = torch.full((2, 6, 8), -5.0)
    masks[0, 1:3, 2:5] = 2.0
    masks[1, 4:6, 0:2] = 1.0
    labels, scores, boxes, binary = instance_postprocess(cls_logits, masks, max_per_image=2)
    order = scores.argsort(descending=True)
    p0 = torch.softmax(cls_logits[0], 0)[0] * torch.sigmoid(torch.tensor(2.0))
    assert labels[order].tolist() == [0, 2]
    assert float(scores[order][0]) == pytest.approx(float(p0), rel=1e-5)
    assert boxes[order][0].tolist() == [2, 1, 5, 3] and binary[order][1].sum() == 4
    assert masks_to_boxes(torch.zeros(1, 3, 3)).tolist() == [[0, 0, 0, 0]]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Mask2FormerDetector, ClipColorClassifier]:
    root = tmp_path_factory.mktemp("geneval_models")
    detector = Mask2FormerDetector.from_pretrained(write_tiny_mask2former(root / "m2f"))
    colors = ClipColorClassifier.from_pretrained(write_tiny_clip(root / "clip"))
    detector.root = root  # type: ignore[attr-defined]  # where the saved folders are, for the runner test
    return detector, colors


def test_detector_and_colour_classifier_plumbing(tiny_models) -> None:
    detector, colors = tiny_models
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8))
    dets = detector(image)
    flat = [d for ds in dets.values() for d in ds]
    assert len(flat) == 100 and set(dets) <= set(object_names())  # mmdet top-100 over 10 queries × 80 classes
    for d in flat:
        assert d.mask.shape == (60, 90) and 0 <= d.score <= 1
        assert 0 <= d.box[0] <= d.box[2] <= 90 and 0 <= d.box[1] <= d.box[3] <= 60
    assert len(color_prompts("car")) == 10 and all(len(t) == 3 for t in color_prompts("car"))
    mask = np.zeros((60, 90), bool)
    mask[10:20, 10:30] = True
    crop = object_crop(image, Detection(box=(5, 5, 40, 30), score=1.0, mask=mask))
    assert crop.size == (35, 25)
    assert crop.getpixel((0, 0)) == Image.new("RGB", (1, 1), BACKGROUND).getpixel((0, 0))
    assert crop.getpixel((10, 10)) == image.getpixel((15, 15))
    names = colors(image, [Detection(box=(5, 5, 40, 30), score=1.0, mask=mask)] * 2, "car")
    assert len(names) == 2 and names[0] == names[1]


def test_geneval_folder_end_to_end(tmp_path: Path, tiny_models) -> None:
    detector, colors = tiny_models
    metadata = [m for m in load_metadata() if m["tag"] in ("single_object", "colors")][79:81]
    rng = np.random.default_rng(1)
    for index, meta in enumerate(metadata):
        folder = write_prompt_folder(tmp_path / "geneval", index, meta)
        for sample in range(2):
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / "samples" / f"{sample:04d}.png")
    items = collect_images(tmp_path / "geneval", metadata, images_per_prompt=2)
    assert len(items) == 4
    rows = [score_item(item, detector, colors) for item in items]
    summary = summarize(rows)
    assert summary.num_images == 4 and set(summary.task_scores) == {"single_object", "colors"}
    with pytest.raises(ValueError, match="incomplete: 2 missing"):
        collect_images(tmp_path / "geneval", metadata, images_per_prompt=3)
    assert len(collect_images(tmp_path / "geneval", metadata, images_per_prompt=3, allow_incomplete=True)) == 4
    with pytest.raises(ValueError, match="prompts file mismatch"):
        collect_images(tmp_path / "geneval", list(reversed(metadata)), images_per_prompt=2)
    (tmp_path / "geneval" / "00000" / "samples" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unexpected file"):
        collect_images(tmp_path / "geneval", metadata, images_per_prompt=2)


def _normalise_reason(reason: str) -> str:
    # Upstream joins a *set* of relations, whose order depends on string hashing; compare them sorted.
    return re.sub(r"found ((?:[a-z ]+? and )*[a-z ]+?) target",
                  lambda m: "found " + " and ".join(sorted(m.group(1).split(" and "))) + " target", reason)


def test_scoring_matches_upstream_golden_on_1106_cases() -> None:
    from geneval_cases import fake_color, make_cases

    golden = [json.loads(line) for line in (Path(__file__).parent / "fixtures" / "geneval_golden.jsonl").read_text().splitlines()]
    cases = make_cases()
    assert len(cases) == len(golden) == 1106
    outcomes: dict[str, set[bool]] = {}
    for case, expected in zip(cases, golden):
        assert case["id"] == expected["case"]
        raw = {cls: [Detection(box=tuple(d[:4]), score=d[4]) for d in dets] for cls, dets in case["detections"].items()}
        objects = filter_detections(raw, case["metadata"]["tag"])
        correct, reason = evaluate(objects, case["metadata"], lambda objs, cls: [fake_color(d.box) for d in objs])
        assert (correct, _normalise_reason(reason)) == (expected["correct"], _normalise_reason(expected["reason"])), case["id"]
        outcomes.setdefault(case["metadata"]["tag"], set()).add(correct)
    assert all(v == {True, False} for v in outcomes.values()) and len(outcomes) == 6  # every task passes and fails


def test_geneval_suite_through_the_runner(tmp_path: Path, tiny_models) -> None:
    from infinity_eval.runner import run_suite
    from infinity_eval.suites import build_run_config

    root = tiny_models[0].root
    metadata = load_metadata()
    rng = np.random.default_rng(2)
    for index in (0, 1):
        folder = write_prompt_folder(tmp_path / "images", index, metadata[index])
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "samples" / "0000.png")
    suite = tmp_path / "suite.toml"
    suite.write_text('name = "g"\n[[benchmarks]]\nname = "geneval"\nprompts = "geneval"\nimages_per_prompt = 1\n'
                     'layout = "geneval"\nexpected_prompts = 553\nmetrics = ["geneval"]\n')
    cfg = build_run_config({"run": {"suite": str(suite), "out": str(tmp_path / "out"),
                                    "score_only": str(tmp_path / "images"), "limit": 2, "progress": False,
                                    "bootstrap_samples": 20},
                            "weights": {"geneval_detector": str(root / "m2f"), "clip": str(root / "clip")}})
    result = run_suite(cfg)
    assert not result.complete and result.results[0].num_images == 2
    # a random Mask2Former is not GenEval's detector: its numbers carry another name
    metrics = result.flat_metrics()
    assert "geneval_hfm2f/overall" in metrics and "geneval_hfm2f/single_object" in metrics
    assert not any(k.startswith("geneval/") for k in metrics)
    assert "Overall score (avg. over tasks)" in (tmp_path / "out" / "geneval" / "geneval_summary.txt").read_text()
    # claiming the benchmark's name for it is refused before any work, with one line naming the folder
    suite.write_text(suite.read_text().replace('metrics = ["geneval"]', 'metrics = [{name = "geneval", label = "geneval"}]'))
    with pytest.raises(ValueError, match=rf"label 'geneval' is reserved for GenEval's own detector, and {root / 'm2f'} "
                                         r"is not one .*report it as 'geneval_hfm2f'") as refused:
        run_suite(build_run_config({"run": {"suite": str(suite), "out": str(tmp_path / "refused"),
                                            "score_only": str(tmp_path / "images"), "limit": 2, "progress": False},
                                    "weights": {"geneval_detector": str(root / "m2f"), "clip": str(root / "clip")}}))
    assert "\n" not in str(refused.value) and not (tmp_path / "refused").exists()
