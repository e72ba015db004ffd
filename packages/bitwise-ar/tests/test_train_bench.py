"""The prepared GPU training benchmark runs end to end on CPU with --tiny (so a GPU slot cannot fail on a bug)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "gpu_train.py"


@pytest.mark.parametrize("fsdp", [False, True], ids=["single", "fsdp"])
def test_gpu_train_benchmark_tiny_on_cpu(tmp_path, fsdp):
    if not BENCH.is_file():
        pytest.skip("bench/ is not part of this checkout")
    out = tmp_path / "train_gpu.json"
    flags = ["--fsdp"] if fsdp else []
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", *flags, "--output", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["strategy"] == ("fsdp" if fsdp else "none")
    assert result["preset"] == "debug" and result["tokens_per_step"] > 0
    assert result["model_flops_per_step"] > 0 and result["median_step_s"] > 0
    assert set(result["split_last_step"]) == {"time/prepare_s", "time/forward_s", "time/backward_s"}


def test_parallel_training_benchmark_tiny(tmp_path):
    """1 worker vs 2-worker DDP vs 2-worker FSDP: same loss, FSDP halves the per-rank weights and AdamW state."""
    bench = BENCH.parent / "bench_train_parallel.py"
    if not bench.is_file():
        pytest.skip("bench/ is not part of this checkout")
    out = tmp_path / "parallel.json"
    proc = subprocess.run([sys.executable, str(bench), "--tiny", "--steps", "2", "--output", str(out)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    ratios = json.loads(out.read_text())["ratios"]
    for arm in ("2-worker DDP", "2-worker FSDP"):
        assert ratios[arm]["loss_rel_diff_vs_1_worker"] < 1e-4
    assert ratios["2-worker DDP"]["param_bytes_vs_1_worker"] == 1.0
    assert 0.49 < ratios["2-worker FSDP"]["param_bytes_vs_1_worker"] < 0.55
    assert 0.49 < ratios["2-worker FSDP"]["optimizer_bytes_vs_1_worker"] < 0.55
