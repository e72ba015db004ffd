"""The prepared GPU training benchmark runs end to end on CPU with --tiny (so a GPU slot cannot fail on a bug)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "gpu_train.py"


def test_gpu_train_benchmark_tiny_on_cpu(tmp_path):
    if not BENCH.is_file():
        pytest.skip("bench/ is not part of this checkout")
    out = tmp_path / "train_gpu.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--output", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["preset"] == "debug" and result["tokens_per_step"] > 0
    assert result["model_flops_per_step"] > 0 and result["median_step_s"] > 0
    assert set(result["split_last_step"]) == {"time/prepare_s", "time/forward_s", "time/backward_s"}
