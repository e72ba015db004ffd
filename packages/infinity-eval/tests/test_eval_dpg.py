"""DPG-Bench: the vendored prompts, the question-graph reader, dependency-aware scoring against hand-computed
values (default and ELLA-compatible modes), the 2x2 tile order, and the BLIP VQA backend on a tiny saved model."""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from infinity_eval.dpg import (
    CSV_COLUMNS,
    NUM_PROMPTS,
    PROMPTS_FILE,
    BlipVQA,
    evaluate_folder,
    grid_tiles,
    load_prompts,
    load_questions,
    question_scores,
)
from PIL import Image

# (item, qid, dependency, tuple, question); p1's first row is the one ELLA's script skips (ELLA#61)
ROWS = [
    ("p1", 1, "0", "entity - whole (dog)", "Is there a dog?"),
    ("p1", 2, "1", "attribute - color (dog, brown)", "Is the dog brown?"),
    ("p1", 3, "1,2", "relation - spatial (dog, sofa, on)", "Is the dog on the sofa?"),
    ("p1", 4, "0", "global - (photo)", "Is this a photo?"),
    ("p2", 1, "0", "entity - whole (cat)", "Is there a cat?"),
    ("p2", 2, "1", "other - count (cat, ==2)", "Are there two cats?"),
]
# answers[item][tile][question]; the tile is recognised by its colour, so the crop order is checked too
ANSWERS = {
    "p1": [["yes", "no", "yes", "yes"],    # raw 1 0 1 1 -> q3 loses parent 2 -> 1 0 0 1 = 0.50
           ["no", "yes", "yes", "yes"],    # 0 1 1 1 -> q2, q3 lose parent 1 -> 0 0 0 1 = 0.25
           ["yes", "yes", "yes", "Yes"],   # "Yes" is not "yes" -> 1 1 1 0 = 0.75
           ["yes", "yes", "no", "no"]],    # 1 1 0 0 = 0.50            p1 = 0.5
    "p2": [["yes", "yes"],                 # 1 1 = 1
           ["no", "yes"],                  # 0 0 = 0
           ["yes", "no"],                  # 1 0 = 0.5
           ["yes ", "yes"]],               # 0 0 = 0                   p2 = 0.375
}
TILE_COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]  # top-left, top-right, bottom-left, bottom-right


def write_csv(path: Path, rows: Sequence[tuple] = ROWS) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for item, qid, dep, tup, question in rows:
            writer.writerow([item, "prompt text", "", qid, dep, tup.split(" ")[0], tup.split("(")[0].strip(), tup, question])
    return path


def grid_image(tile: int = 16) -> Image.Image:
    image = Image.new("RGB", (2 * tile, 2 * tile))
    for (col, row), color in zip(((0, 0), (1, 0), (0, 1), (1, 1)), TILE_COLORS):
        image.paste(color, (col * tile, row * tile, (col + 1) * tile, (row + 1) * tile))
    return image


class ScriptedVQA:
    """Answers from :data:`ANSWERS`, looked up by the tile's colour and the question's text."""

    metric_name = "dpg_scripted"

    def __init__(self) -> None:
        self.questions = {q: (item, i) for item in ("p1", "p2")
                          for i, q in enumerate(r[4] for r in ROWS if r[0] == item)}

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        out = []
        for image, question in zip(images, questions):
            colors = image.getcolors()
            assert colors is not None and len(colors) == 1, "a tile must be exactly one grid cell"
            tile = TILE_COLORS.index(colors[0][1])
            item, index = self.questions[question]
            out.append(ANSWERS[item][tile][index])
        return out


@pytest.fixture
def bench(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    for item in ("p1", "p2"):
        grid_image().save(folder / f"{item}.png")
    return write_csv(tmp_path / "dpg_bench.csv"), folder


def test_vendored_prompts() -> None:
    prompts = load_prompts()
    assert len(prompts) == NUM_PROMPTS
    sources = Counter(re.sub(r"\d+$", "", stem) for stem in prompts)
    assert sources == {"": 299, "partiprompts": 324, "COCOval": 100, "localized": 22, "countbench": 40, "diffusiondb": 40,
                       "drawtext": 40, "midjourney": 40, "posescript": 40, "stanford": 40, "vrd": 40, "whoops": 40}
    assert prompts["partiprompts97"].startswith("An empty space where an invisible man would be")
    assert hashlib.sha256(PROMPTS_FILE.read_bytes()).hexdigest().startswith("e0d07d06590b2f98")


def test_scores_match_hand_computation(bench: tuple[Path, Path]) -> None:
    questions_csv, folder = bench
    metrics, results = evaluate_folder(folder, questions_csv, ScriptedVQA())
    assert [r.tile_scores for r in results] == [[0.5, 0.25, 0.75, 0.5], [1.0, 0.0, 0.5, 0.0]]
    assert metrics == pytest.approx({
        "dpg_scripted/overall": 100 * (0.5 + 0.375) / 2,
        # final scores over all tiles: entity p1 1 0 1 1 + p2 1 0 1 0 = 5/8; attribute 0 0 1 1; relation 0 0 1 0; ...
        "dpg_scripted/L1/entity": 62.5, "dpg_scripted/L1/attribute": 50.0, "dpg_scripted/L1/relation": 25.0,
        "dpg_scripted/L1/global": 50.0, "dpg_scripted/L1/other": 25.0,
        "dpg_scripted/L2/entity - whole": 62.5, "dpg_scripted/L2/attribute - color": 50.0,
        "dpg_scripted/L2/relation - spatial": 25.0, "dpg_scripted/L2/global -": 50.0, "dpg_scripted/L2/other - count": 25.0,
    })


def test_ella_compat_mode(bench: tuple[Path, Path]) -> None:
    questions_csv, folder = bench
    # ELLA#61 drops p1's question 1, so p1's graph names a missing question and p1 is left out, as upstream;
    # ELLA#60 takes categories from the last tile before zeroing: p2's "yes " (0) and "yes" (1)
    metrics, results = evaluate_folder(folder, questions_csv, ScriptedVQA(), compat_ella=True)
    assert [r.item_id for r in results] == ["p2"]
    assert metrics == pytest.approx({"dpg_scripted/overall": 37.5, "dpg_scripted/L1/entity": 0.0,
                                     "dpg_scripted/L1/other": 100.0, "dpg_scripted/L2/entity - whole": 0.0,
                                     "dpg_scripted/L2/other - count": 100.0})


def test_cascade_and_bad_input(tmp_path: Path, bench: tuple[Path, Path]) -> None:
    chain = load_questions(write_csv(tmp_path / "chain.csv", [("c", 1, "0", "entity - whole (a)", "q1"),
                                                              ("c", 2, "1", "attribute - color (a)", "q2"),
                                                              ("c", 3, "2", "relation - spatial (a)", "q3")]))["c"]
    assert question_scores(chain, ["no", "yes", "yes"]) == ([0.0, 1.0, 1.0], [0.0, 0.0, 0.0])  # zeros cascade
    assert question_scores(chain, ["yes", "yes", "yes"])[1] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="depends on unknown questions"):
        load_questions(write_csv(tmp_path / "bad.csv", [("c", 2, "1", "entity - whole (a)", "q")]))
    with pytest.raises(ValueError, match="must be integers"):
        load_questions(write_csv(tmp_path / "bad2.csv", [("c", 1, "x", "entity - whole (a)", "q")]))
    (tmp_path / "cols.csv").write_text("item_id,text\np,q\n")
    with pytest.raises(ValueError, match="missing columns"):
        load_questions(tmp_path / "cols.csv")
    questions_csv, folder = bench
    (folder / "p2.png").unlink()
    with pytest.raises(ValueError, match="1 of 2 prompts have no image"):
        evaluate_folder(folder, questions_csv, ScriptedVQA())
    assert evaluate_folder(folder, questions_csv, ScriptedVQA(), allow_incomplete=True)[0]["dpg_scripted/overall"] == 50.0
    with pytest.raises(ValueError, match="not a 2x2 grid"):
        grid_tiles(Image.new("RGB", (32, 32)), resolution=20)


def test_tiles_follow_upstream_order() -> None:
    tiles = grid_tiles(grid_image(tile=8), count=4)
    assert [t.size for t in tiles] == [(8, 8)] * 4
    assert [t.getpixel((3, 3)) for t in tiles] == TILE_COLORS
    assert len(grid_tiles(grid_image(), count=1)) == 1


def test_blip_backend_on_a_tiny_saved_model(tmp_path: Path, bench: tuple[Path, Path]) -> None:
    pytest.importorskip("transformers", reason="needs the models extra")
    import torch
    from infinity_eval.testing import write_tiny_blip_vqa
    from transformers import BlipForQuestionAnswering, BlipProcessor

    folder = write_tiny_blip_vqa(tmp_path / "blip")
    vqa = BlipVQA.from_pretrained(folder)
    vqa.max_new_tokens = 3  # a random model never stops early; keep the test short
    assert vqa.metric_name == "dpg_blip"  # never "dpg": not the benchmark's mPLUG
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(3)]
    questions = ["is there a dog?", "is the cat red?", "is there a blue dog?"]
    answers = vqa.answer(images, questions)
    model = BlipForQuestionAnswering.from_pretrained(folder).eval()
    processor = BlipProcessor.from_pretrained(folder)
    with torch.inference_mode():
        direct = model.generate(**processor(images=images, text=questions, return_tensors="pt", padding=True),
                                max_new_tokens=3)
    assert answers == [a.strip().lower() for a in processor.batch_decode(direct, skip_special_tokens=True)]
    questions_csv, grids = bench
    metrics, results = evaluate_folder(grids, questions_csv, vqa)
    assert set(metrics) >= {"dpg_blip/overall", "dpg_blip/L1/entity"} and len(results) == 2
    assert 0.0 <= metrics["dpg_blip/overall"] <= 100.0
    with pytest.raises(FileNotFoundError, match="no BLIP VQA model"):
        BlipVQA.from_pretrained(tmp_path)


def test_suite_metric_scores_samples_as_tiles(bench: tuple[Path, Path], tmp_path: Path) -> None:
    """The runner's ``dpg_blip`` metric scores each sample image as one tile: the same numbers as the grid path."""
    from infinity_eval.benchmarks import PromptRecord, SampleRef
    from infinity_eval.scorers import DPGMetric

    questions_csv, _ = bench
    refs = []
    for index, item in enumerate(("p1", "p2")):
        record = PromptRecord(prompt_id=item, prompt="prompt text", index=index)
        for sample, color in enumerate(TILE_COLORS):
            path = tmp_path / f"{item}_{sample}.png"
            Image.new("RGB", (16, 16), color).save(path)
            refs.append(SampleRef(record=record, sample_index=sample, seed=0, path=path))
    metric = DPGMetric(tmp_path, questions_csv, name="dpg_scripted")
    metric._state = (ScriptedVQA(), load_questions(questions_csv))
    rows = metric.score(refs)
    grid_metrics, _ = evaluate_folder(bench[1], questions_csv, ScriptedVQA())
    assert metric.aggregate(rows) == pytest.approx(grid_metrics)
    assert metric.headline(rows) == pytest.approx(43.75)


def test_dpg_suite_score_only_with_tiny_blip(bench: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="needs the models extra")
    from infinity_eval.runner import run_suite
    from infinity_eval.suites import build_run_config
    from infinity_eval.testing import write_tiny_blip_vqa

    ids = list(load_prompts())[:2]
    questions = write_csv(tmp_path / "q.csv", [(ids[i], *row[1:]) for i, item in enumerate(("p1", "p2"))
                                               for row in ROWS if row[0] == item])
    images = tmp_path / "images"
    for item in ids:
        (images / item).mkdir(parents=True)
        grid_image().save(images / item / "0000.png")
    suite = tmp_path / "suite.toml"
    suite.write_text('name = "d"\n[[benchmarks]]\nname = "dpg"\nprompts = "dpg"\nimages_per_prompt = 1\n'
                     'expected_prompts = 1065\nmetrics = ["dpg_blip"]\n')
    weights = {"dpg_vqa": str(write_tiny_blip_vqa(tmp_path / "blip")), "dpg_questions": str(questions)}
    run = {"suite": str(suite), "out": str(tmp_path / "out"), "score_only": str(images), "limit": 2,
           "progress": False, "bootstrap_samples": 10}
    result = run_suite(build_run_config({"run": run, "weights": weights}))
    metrics = result.flat_metrics()
    assert "dpg_blip/overall" in metrics and "dpg_blip/L1/entity" in metrics and not result.complete
    with pytest.raises(FileNotFoundError, match=r"none/dpg_bench\.csv"):  # the question file is listed as missing
        run_suite(build_run_config({"run": {**run, "out": str(tmp_path / "out2")},
                                    "weights": {"dpg_vqa": weights["dpg_vqa"], "root": str(tmp_path / "none")}}))


def test_fetch_questions_once_validates_and_writes_atomically(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from infinity_eval.cli import main

    source = write_csv(tmp_path / "upstream.csv")
    out = tmp_path / "weights" / "dpg_bench.csv"
    assert main(["fetch-dpg", str(out), "--url", source.as_uri()]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("downloaded\t2 prompts, 6 questions, sha256 ")
    assert printed[1] == f"dpg_questions\t{out.resolve()}"  # the line for the eval weights config
    assert out.read_bytes() == source.read_bytes() and set(load_questions(out)) == {"p1", "p2"}
    source.unlink()  # once: a present, valid file is kept without a download
    assert main(["fetch-dpg", str(out), "--url", source.as_uri()]) == 0
    assert capsys.readouterr().out.startswith("present\t2 prompts")
    assert main(["fetch-dpg", str(out), "--url", source.as_uri(), "--force"]) == 2  # forced: the URL is gone
    assert "could not download the DPG-Bench question graph from file://" in capsys.readouterr().err
    assert out.read_bytes() == write_csv(tmp_path / "again.csv").read_bytes()  # the good file survives a failed fetch

    broken = {
        "columns": ("item_id,text\np1,q\n", r"missing columns \['keywords'"),
        "dependency": ([*ROWS, ("p2", 3, "4", "entity - whole (x)", "q")],  # 4 is p1's question, not p2's
                       r":? question 3 of 'p2' depends on unknown questions \[4\]"),
        "id": ([("p1", "one", "0", "entity - whole (a)", "q")], r":2: proposition_id and dependency must be integers"),
        "duplicate": ([ROWS[0], ROWS[0]], r":3: question 1 of 'p1' appears twice"),
    }
    for name, (content, message) in broken.items():
        bad = tmp_path / f"{name}.csv"
        if isinstance(content, str):
            bad.write_text(content)
        else:
            write_csv(bad, content)
        target = tmp_path / "broken" / f"{name}.csv"
        assert main(["fetch-dpg", str(target), "--url", bad.as_uri()]) == 2, name
        err = capsys.readouterr().err
        assert re.search(message, err) and bad.as_uri() in err and err.count("\n") == 1, (name, err)
        assert not target.exists() and not list(target.parent.glob("*.partial")), name  # nothing half-written
