"""The analytic cost model against torch's FLOP counter, and the prepared GPU benchmark run with --tiny on CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from bitwise_ar.config import PRESETS
from bitwise_ar.costs import flops_per_image, inference_memory_bytes, training_flops_per_sample
from bitwise_ar.sampling import SamplingConfig, sample
from bitwise_ar.testing import random_text
from torch.utils.flop_counter import FlopCounterMode

BENCH_DIR = Path(__file__).resolve().parents[3] / "bench"


@pytest.mark.parametrize("use_cache", [True, False], ids=["kv_cache", "recompute_prefix"])
def test_counted_flops_match_the_analytic_formula(ar_model, ar_layout, use_cache):
    text = random_text([12], ar_model.config.text_channels)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        sample(ar_model, text, ar_layout, SamplingConfig(cfg=3.0), use_cache=use_cache)
    analytic = flops_per_image(ar_model.config, ar_layout.schedule, text_tokens=12, kv_cache=use_cache)["total"]
    # the formula leaves out the text pool, AdaLN and input embedding (< 3% at this tiny width)
    assert 1.0 <= counter.get_total_flops() / analytic < 1.03


def test_training_flops_match_a_counted_forward_and_backward(ar_model, ar_layout):
    schedule = ar_layout.schedule
    text = random_text([12, 12], ar_model.config.text_channels)
    inputs = torch.randn(2, sum(h * w for h, w in schedule[1:]), ar_model.config.codebook_dim)
    with FlopCounterMode(display=False) as counter:
        ar_model(text, inputs, ar_layout, attention="chunked").float().sum().backward()  # exact block-causal work
    analytic = 2 * training_flops_per_sample(ar_model.config, schedule, text_tokens=12)
    # the formula leaves out the text pool, AdaLN and input embedding (< 7% at this tiny width)
    assert 1.0 <= counter.get_total_flops() / analytic < 1.07


def test_released_2b_numbers():
    from bsq_tokenizer.schedules import get_scale_schedule

    schedule = get_scale_schedule(1.0, "1M")
    cached = flops_per_image(PRESETS["infinity-2b"], schedule)
    full = flops_per_image(PRESETS["infinity-2b"], schedule, kv_cache=False)
    assert abs(cached["linear"] / 1e12 - 79.1) < 0.1 and abs(cached["self_attention"] / 1e12 - 35.9) < 0.1
    assert 2.2 < full["total"] / cached["total"] < 2.3  # perf notes: 2.26x without a KV cache
    memory = inference_memory_bytes(PRESETS["infinity-2b"], schedule)
    assert 9 * 2**30 < memory["total"] < 12 * 2**30


def test_gpu_script_runs_tiny_on_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_ar_2b", BENCH_DIR / "gpu_ar_2b.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "ar_gpu.json"
    result = module.main(["--tiny", "--reps", "1", "--warmup", "1", "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved["tokens"] == 21 and saved["attention_backend"] in ("sdpa", "flash")
    for mode in ("eager", "compiled"):  # both modes measured, compiled through the per-scale graphs
        assert len(saved["modes"][mode]["per_scale_s_median"]) == 3 and saved["modes"][mode]["total_s_median"] > 0
    assert result["ratio_eager_over_compiled"] > 0 and result["bound_transformer_s"] > 0
    assert result["compile_failure"] is None


def test_gpu_checks_script_runs_tiny_on_cpu(tmp_path):
    """bench/gpu_checks.py --tiny: every check runs (CPU against CPU) and passes, so the GPU run cannot fail on a bug."""
    spec = importlib.util.spec_from_file_location("gpu_checks", BENCH_DIR / "gpu_checks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "gpu_checks.json"
    result = module.main(["--tiny", "--output", str(out)])
    assert json.loads(out.read_text()).keys() == result.keys()
    for name in ("tiny_parity", "bf16", "tokenizer", "demo"):
        assert result[name]["pass"], result[name]
    assert result["tiny_parity"]["scales_with_identical_bits_vs_cpu"] == "5/5"
    assert result["demo"]["identical_images_vs_cpu"] == "24/24" and result["demo"]["readme_prompt_correct"]
    winograd = result["cpu_winograd"]  # timed, so its pass flag is not asserted on a shared CI machine
    assert "error" not in winograd and winograd["inference_s"] > 0 and winograd["direct_s"] > 0
    assert 0 < winograd["features_max_abs_diff"] < 1e-4 and winograd["image_max_abs_diff"] < 1e-4  # paths differ


def test_roofline_replays_exactly_the_samplers_arithmetic(ar_model, ar_layout):
    """bench/sampling_roofline.py's floor: the recorded matrix products and attention calls of a KV-cached CFG
    sampling carry all of its counted FLOPs, and the replay performs exactly those FLOPs again."""
    spec = importlib.util.spec_from_file_location("sampling_roofline", BENCH_DIR / "sampling_roofline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = random_text([12], ar_model.config.text_channels)

    def run():
        with torch.inference_mode():
            sample(ar_model, text, ar_layout, SamplingConfig(cfg=3.0))

    calls = module.record_products(run)
    recorded = sum(module.flops(op, shapes) * n for (op, shapes), n in calls.items())
    with FlopCounterMode(display=False) as sampled:
        run()
    assert {op for op, _ in calls} >= {"aten::addmm", "aten::scaled_dot_product_attention"}
    assert recorded == sampled.get_total_flops()
    with FlopCounterMode(display=False) as replayed:
        module.replay(calls, (*module.GEMM_OPS, module.ATTENTION_OP))()
    assert replayed.get_total_flops() == recorded
