"""bench/bench_edit.py on one edit: the scene, mask and edited prompt it builds, and its invariants on the demo model
(the 0.5-threshold edit keeps every bit its keep-mask covers; generating anew does not)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bench_edit.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_edit", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_edit_cases_replace_one_object_inside_its_box():
    bench = _bench()
    rng = np.random.default_rng(3)
    for _ in range(20):
        source, edited, image, mask, (x0, y0, x1, y1) = bench.edit_case(rng)
        changed = [j for j in range(2) if source.groups[j] != edited.groups[j]]
        assert len(changed) == 1 and edited.relation == source.relation
        assert mask.shape == (image.height, image.width) and set(np.unique(mask)) == {0, 255}
        assert mask[y0:y1, x0:x1].all() and mask.sum() == 255 * (x1 - x0) * (y1 - y0)


def test_bench_runs_and_keeps_the_bits_outside(tmp_path):
    out = tmp_path / "edit.json"
    assert _bench().main(["--edits", "1", "--thresholds", "0.5", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["summary"]["edit@0.5"]["bits_out"]["mean"] == 1.0
    assert result["summary"]["generate"]["bits_out"]["mean"] < 1.0
    arm = result["row_columns"].index("arm")
    assert {r[arm] for r in result["rows"]} == {"edit@0.5", "generate", "reconstruction"} and len(result["cases"]) == 1
