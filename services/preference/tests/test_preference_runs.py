"""Reading infinity-eval run folders and refusing runs that do not hold the same prompts and seeds."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from infinity_preference.runs import load_eval_run, match_runs, parse_run_spec


def test_flat_and_geneval_layouts_are_read_with_categories(make_run: Callable[..., Path], prompts: tuple) -> None:
    flat = load_eval_run(make_run("flat", color=(1, 2, 3), model="m1", images_per_prompt=2))
    assert flat.benchmark == "shapes" and flat.seed == "0" and flat.label == "m1" and flat.images_per_prompt == 2
    assert {pid: (p.text, p.category) for pid, p in flat.prompts.items()} == {pid: (t, c) for pid, t, c in prompts}
    assert sorted(flat.images) == [(pid, s) for pid, _, _ in prompts for s in range(2)]
    assert all(path.is_file() for path in flat.images.values())
    geneval = load_eval_run(make_run("g", color=(1, 2, 3), model="m2", layout="geneval", benchmark="geneval"),
                            label="mine")  # fmt: skip
    assert geneval.label == "mine" and geneval.benchmark == "geneval"
    assert [(pid, p.category) for pid, p in geneval.prompts.items()] == [
        (f"{i:05d}", c) for i, (_, _, c) in enumerate(prompts)
    ]
    slots = match_runs([flat, load_eval_run(make_run("flat2", color=(9, 9, 9), model="m3", images_per_prompt=2))])
    assert len(slots.slots) == 8 and slots.benchmark == "shapes"


def test_mismatched_runs_are_refused_with_a_clear_error(make_run: Callable[..., Path], prompts: tuple) -> None:
    base = load_eval_run(make_run("base", color=(1, 2, 3), model="base"))

    def other(name: str, **kwargs: object) -> object:
        return load_eval_run(make_run(name, **{"color": (4, 5, 6), "model": name, **kwargs}))

    cases = {
        "used different seeds (seed=0 vs seed=7)": other("seed", seed=7),
        "different prompt sets": other("fewer", prompts=prompts[:3]),
        "differ at prompt id 00001": other(
            "text", prompts=[prompts[0], ("00001", "one blue square", "counting"), *prompts[2:]]
        ),
        "1 vs 2 images per prompt": other("ipp", images_per_prompt=2),
        "different benchmarks": other("bench", benchmark="imagereward"),
    }
    for message, run in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            match_runs([base, run])
    with pytest.raises(ValueError, match="two or more eval runs"):
        match_runs([base])
    with pytest.raises(ValueError, match="labels must differ"):
        match_runs([base, base])


def test_broken_run_folders_fail_clearly(make_run: Callable[..., Path], tmp_path: Path) -> None:
    run = make_run("broken", color=(1, 2, 3), model="x")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_eval_run(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="has no benchmark 'geneval'"):
        load_eval_run(run, benchmark="geneval")
    next(run.rglob("0000.png")).unlink()
    with pytest.raises(ValueError, match="1 of 4 images missing"):
        load_eval_run(run)
    (run / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON results file"):
        load_eval_run(run)
    (run / "results.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a finished infinity-eval run"):
        load_eval_run(run)
    hps = make_run("hps", color=(1, 2, 3), model="h")
    (hps / "shapes" / "images" / "prompts.jsonl").unlink()
    with pytest.raises(ValueError, match=r"neither prompts\.jsonl"):
        load_eval_run(hps)
    two = make_run("two", color=(1, 2, 3), model="t")
    results = json.loads((two / "results.json").read_text())
    results["results"].append({"benchmark": "geneval"})
    (two / "results.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match=r"has benchmarks \['geneval', 'shapes'\]; name one"):
        load_eval_run(two)
    assert parse_run_spec("mine=/a/b") == ("mine", "/a/b") and parse_run_spec("/a/b") == (None, "/a/b")
