"""CPU benchmark of Infinity sampling (random weights): per-scale latency, KV cache vs recompute-the-prefix, FLOPs.

Configs: "tiny" (depth 2, C 64, the perf notes' overhead proxy) and "125m" (the released 125M shape, Ct5 2048) at
256x256 (0.06M, 1:1, 7 scales, 521 tokens), batch 1 with CFG (2 rows), random text features of 64 tokens (T5 is
replaced, as in the perf-notes protocol). The VAE (d32 architecture, random weights) is timed separately.

    uv run python bench/bench_ar.py [--reps 3] [--skip-vae] [--output bench/results/ar_cpu.json]

Reports medians; CPU milliseconds are not GPU speed claims -- the ratios (cache/recompute vs FLOP ratio, counted vs
analytic FLOPs) are the point.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from bitwise_ar.config import PRESETS
from bitwise_ar.costs import flops_per_image
from bitwise_ar.layout import ScaleLayout
from bitwise_ar.sampling import SamplingConfig, iter_scales
from bitwise_ar.testing import random_text, tiny_transformer
from torch.utils.flop_counter import FlopCounterMode

CONFIGS = {
    "tiny": PRESETS["debug"].replace(depth=2, embed_dim=64, num_heads=1, codebook_dim=32, text_channels=2048),
    "125m": PRESETS["infinity-125m"].replace(drop_path_rate=0.0),
}
TEXT_TOKENS = 64
SETTINGS = SamplingConfig(cfg=3.0, tau=0.5, top_k=900, top_p=0.97)


def run_once(model, text, layout, *, use_cache: bool, seed: int = 0) -> tuple[float, list[float]]:
    gen = torch.Generator().manual_seed(seed)
    times, t0 = [], time.perf_counter()
    last = t0
    with torch.inference_mode():
        for _ in iter_scales(model, text, layout, SETTINGS, generator=gen, use_cache=use_cache):
            now = time.perf_counter()
            times.append(now - last)
            last = now
    return last - t0, times


def count_flops(model, text, layout, *, use_cache: bool) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        for _ in iter_scales(model, text, layout, SETTINGS, generator=torch.Generator().manual_seed(0), use_cache=use_cache):
            pass
    return counter.get_total_flops()


def bench_config(name: str, reps: int) -> dict:
    config = CONFIGS[name]
    model = tiny_transformer(config, seed=0)
    layout = ScaleLayout.build([(1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16)])
    text = random_text([TEXT_TOKENS], config.text_channels)
    out: dict = {"config": name, "parameters": model.num_parameters(), "schedule": [list(s) for s in layout.schedule]}
    modes = (("cache", True), ("recompute", False))
    for _, use_cache in modes:  # warm-up
        run_once(model, text, layout, use_cache=use_cache)
    runs: dict[str, list] = {mode: [] for mode, _ in modes}
    for i in range(reps):  # interleaved A/B so that load changes hit both modes alike
        for mode, use_cache in modes:
            runs[mode].append(run_once(model, text, layout, use_cache=use_cache, seed=i))
    for mode, use_cache in modes:
        out[mode] = {
            "total_s_median": statistics.median(r[0] for r in runs[mode]),
            "total_s_min": min(r[0] for r in runs[mode]),
            "per_scale_s_min": [min(r[1][k] for r in runs[mode]) for k in range(layout.num_scales)],
            "flops_counted": count_flops(model, text, layout, use_cache=use_cache),
            "flops_analytic": flops_per_image(config, layout.schedule, text_tokens=TEXT_TOKENS, kv_cache=use_cache)["total"],
        }
    out["time_ratio_recompute_over_cache"] = out["recompute"]["total_s_min"] / out["cache"]["total_s_min"]
    out["flop_ratio_recompute_over_cache"] = out["recompute"]["flops_counted"] / out["cache"]["flops_counted"]
    for mode in ("cache", "recompute"):
        out[mode]["counted_over_analytic"] = out[mode]["flops_counted"] / out[mode]["flops_analytic"]
    return out


def bench_vae(reps: int) -> dict:
    from bsq_tokenizer import PRESETS as TOKENIZER_PRESETS
    from bsq_tokenizer import BSQTokenizer

    vae = BSQTokenizer(TOKENIZER_PRESETS["d32reg"]).eval()
    codes = torch.randn(1, 32, 16, 16) / 32**0.5
    with torch.inference_mode():
        vae.decode_features(codes)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            vae.decode_features(codes)
            times.append(time.perf_counter() - t0)
    return {"tokenizer": "d32reg architecture, random weights", "decode_256_s_median": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--skip-vae", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = least sensitive to a shared CPU)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "ar_cpu.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {
        "note": "times are the minimum over interleaved repetitions; CPU ms are not GPU speed claims",
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "settings": {"batch": 1, "cfg": 3.0, "text_tokens": TEXT_TOKENS, "resolution": "256x256 (0.06M, 1:1)",
                     "reps": args.reps, "dtype": "fp32"},
        "configs": [bench_config(name, args.reps) for name in args.configs],
    }
    if not args.skip_vae:
        result["vae"] = bench_vae(max(1, args.reps - 1))
    for c in result["configs"]:
        print(
            f"{c['config']:>5}: cache {c['cache']['total_s_min'] * 1e3:8.1f} ms, recompute "
            f"{c['recompute']['total_s_min'] * 1e3:8.1f} ms -> time ratio {c['time_ratio_recompute_over_cache']:.2f} "
            f"vs FLOP ratio {c['flop_ratio_recompute_over_cache']:.2f}; FLOPs counted/analytic "
            f"{c['cache']['counted_over_analytic']:.3f} (cache), {c['recompute']['counted_over_analytic']:.3f} (recompute)"
        )
        print("       per-scale ms (cache, min): " + " ".join(f"{t * 1e3:.1f}" for t in c["cache"]["per_scale_s_min"]))
    if "vae" in result:
        print(f"  vae: decode 256x256 {result['vae']['decode_256_s_median'] * 1e3:.0f} ms")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
