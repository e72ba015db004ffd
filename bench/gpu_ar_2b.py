"""GPU benchmark: Infinity-2B shape at 1024x1024 (or the 125M at 256x256), random weights, bf16 blocks, batch 1 with
CFG (2 rows), eager against compiled sampling (``SamplingConfig.compile``: one graph per scale, CUDA graphs).

Measures end-to-end latency (transformer sampling + VAE decode; T5 replaced by 64 random text tokens, as in the perf
notes protocol), per-scale times (CUDA events), peak memory, and the ratio to the per-scale compute/bandwidth bound, for
each mode; the first call (the compile, for "compiled") is reported apart and repetitions alternate between the modes.
``--attention auto`` uses flash-attn (self- and cross-attention) where installed. ``--tiny`` runs the same code on
CPU with a tiny model at 3 scales so the script cannot fail on a bug when a GPU slot comes (the test suite runs it).

    python bench/gpu_ar_2b.py [--tiny] [--config 2b|125m] [--modes eager compiled] [--reps 10] [--warmup 3]
        [--vae-dtype fp32|bf16] [--attention sdpa|flash|auto] [--output $OUT/ar_gpu_2b.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from bitwise_ar.config import PRESETS
from bitwise_ar.costs import GPU_PEAKS, flops_per_image, inference_memory_bytes, roofline_seconds
from bitwise_ar.layout import ScaleLayout
from bitwise_ar.model import InfinityTransformer, PackedText
from bitwise_ar.sampling import SamplingConfig, iter_scales

VAE_DECODE_FLOPS_1024 = 9.85e12  # d32 decoder at 1024x1024 (perf notes §4)


@torch.no_grad()
def random_init_(model: InfinityTransformer, seed: int) -> InfinityTransformer:
    """Cheap in-place random weights on the model's device (values do not change the cost of a fixed schedule)."""
    gen = torch.Generator(device=model.pos_start.device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("scale_mul_1H11"):
            p.fill_(math.log(4.0))
        elif name.endswith("ada_gss"):
            p.normal_(0.0, 0.1, generator=gen)
        elif name.endswith("norm.weight"):
            p.fill_(1.0)
        elif p.ndim == 1:
            p.zero_()
        else:
            p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]), generator=gen)
    for name, buf in model.named_buffers():
        if name.endswith("zero_k_bias"):
            buf.zero_()
    return model


def build(tiny: bool, device: torch.device, dtype: torch.dtype, name: str = "2b"):
    from bsq_tokenizer import PRESETS as TOKENIZER_PRESETS
    from bsq_tokenizer import BSQTokenizer
    from bsq_tokenizer.schedules import get_scale_schedule

    if tiny:
        config = PRESETS["debug"].replace(codebook_dim=32, text_channels=2048, text_maxlen=512)
        schedule = [(1, 1), (2, 2), (4, 4)]  # three graphs keep the CPU compile of the smoke test short
        vae_config = TOKENIZER_PRESETS["debug"].__class__(**{**TOKENIZER_PRESETS["debug"].to_dict(), "codebook_dim": 32})
    elif name == "125m":
        config = PRESETS["infinity-125m"].replace(drop_path_rate=0.0)
        schedule = get_scale_schedule(1.0, "0.06M")
        vae_config = TOKENIZER_PRESETS["d32reg"]
    else:
        config = PRESETS["infinity-2b"].replace(drop_path_rate=0.0)
        schedule = get_scale_schedule(1.0, "1M")
        vae_config = TOKENIZER_PRESETS["d32reg"]
    with torch.device("meta"):
        model = InfinityTransformer(config)
    model = random_init_(model.to_empty(device=device), seed=0).eval()
    model.cast_blocks(dtype)
    vae = BSQTokenizer(vae_config).to(device).eval()
    return model, vae, ScaleLayout.build(schedule)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_image(model, vae, layout, text, settings, device, seed: int, vae_dtype: torch.dtype):
    """Returns (total_s, transformer_s, vae_s, per_scale_s)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    cuda = device.type == "cuda"
    sync(device)
    t0 = time.perf_counter()
    marks = []
    if cuda:
        start = torch.cuda.Event(enable_timing=True)
        start.record()
    with torch.inference_mode():
        summed = None
        for step in iter_scales(model, text, layout, settings, generator=gen):
            summed = step.summed_codes
            if cuda:
                ev = torch.cuda.Event(enable_timing=True)
                ev.record()
                marks.append(ev)
            else:
                marks.append(time.perf_counter())
        sync(device)
        t1 = time.perf_counter()
        image = vae.decode_features(summed, dtype=vae_dtype)
        sync(device)
        t2 = time.perf_counter()
    assert torch.isfinite(image).all(), "non-finite image"
    if cuda:
        per_scale = [start.elapsed_time(marks[0]) / 1e3] + [a.elapsed_time(b) / 1e3 for a, b in itertools.pairwise(marks)]
    else:
        per_scale = [marks[0] - t0] + [b - a for a, b in itertools.pairwise(marks)]
    return t2 - t0, t1 - t0, t2 - t1, per_scale


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU at 3 scales (smoke test)")
    parser.add_argument("--config", choices=["2b", "125m"], default="2b", help="2b at 1024x1024, 125m at 256x256")
    parser.add_argument("--modes", nargs="+", choices=["eager", "compiled"], default=["eager", "compiled"])
    parser.add_argument("--attention", choices=["sdpa", "flash", "auto"], default="auto")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--vae-dtype", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--output", type=Path, default=None, help="JSON output (default: $OUT/ar_gpu_2b.json or ./)")
    args = parser.parse_args(argv)

    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    vae_dtype = torch.bfloat16 if args.vae_dtype == "bf16" else torch.float32
    model, vae, layout = build(args.tiny, device, dtype, args.config)
    model.set_attention_backend(args.attention)
    gen = torch.Generator(device=device).manual_seed(1)
    text = PackedText(torch.randn(64, model.config.text_channels, device=device, generator=gen), (64,))
    settings = {mode: SamplingConfig(cfg=4.0, tau=1.0, top_k=900, top_p=0.97,
                                     compile="on" if mode == "compiled" else "off") for mode in args.modes}

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    key = next((k for k in GPU_PEAKS if k in name), "H100")
    peak_flops, bandwidth = GPU_PEAKS[key]
    bounds = roofline_seconds(model.config, layout.schedule, peak_flops, bandwidth)
    final = layout.schedule[-1]
    vae_bound = VAE_DECODE_FLOPS_1024 * (final[0] * final[1] / 4096) / peak_flops
    med = statistics.median
    result: dict = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tiny": args.tiny,
        "config": "debug-like tiny" if args.tiny else {"2b": "infinity-2b (C 2048, depth 32, 16 heads)",
                                                       "125m": "infinity-125m (C 768, depth 12, 8 heads)"}[args.config],
        "attention_backend": model.attention_backend,
        "schedule": [list(s) for s in layout.schedule],
        "tokens": layout.total_tokens,
        "batch": 1,
        "cfg_rows": 2,
        "block_dtype": str(dtype),
        "vae_dtype": str(vae_dtype),
        "text": "64 random text tokens (T5 excluded)",
        "warmup": args.warmup,
        "reps": args.reps,
        "memory_estimate_bytes": inference_memory_bytes(model.config, layout.schedule, text_tokens=64),
        "flops_per_image": flops_per_image(model.config, layout.schedule),
        "bound_gpu": key,
        "bound_per_scale_s": bounds,
        "bound_transformer_s": sum(bounds),
        "bound_vae_s": vae_bound,
        "modes": {},
    }
    first: dict[str, float] = {}
    for mode in args.modes:  # first call (compile for "compiled") and warm-up, mode by mode
        first[mode] = one_image(model, vae, layout, text, settings[mode], device, 0, vae_dtype)[0]
        for i in range(max(0, args.warmup - 1)):
            one_image(model, vae, layout, text, settings[mode], device, i + 1, vae_dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs: dict[str, list] = {mode: [] for mode in args.modes}
    for i in range(args.reps):  # alternate the modes so that drifts hit both alike
        for mode in args.modes:
            runs[mode].append(one_image(model, vae, layout, text, settings[mode], device, 100 + i, vae_dtype))
    result["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    steps = model.__dict__.get("_compiled_steps", {}).get(str(device))
    result["compile_failure"] = None if steps is None else steps.failure  # a failure means "compiled" ran eagerly
    for mode in args.modes:
        r = runs[mode]
        per_scale = [med(x[3][k] for x in r) for k in range(layout.num_scales)]
        entry = {
            "first_call_s": first[mode],
            "total_s_median": med(x[0] for x in r),
            "total_s_min": min(x[0] for x in r),
            "transformer_s_median": med(x[1] for x in r),
            "vae_decode_s_median": med(x[2] for x in r),
            "per_scale_s_median": per_scale,
            "per_scale_over_bound": [t / b for t, b in zip(per_scale, bounds, strict=True)],
        }
        entry["ratio_transformer_to_bound"] = entry["transformer_s_median"] / result["bound_transformer_s"]
        entry["ratio_total_to_bound"] = entry["total_s_median"] / (result["bound_transformer_s"] + vae_bound)
        result["modes"][mode] = entry
        print(
            f"{name} [{mode}]: total {entry['total_s_median'] * 1e3:.1f} ms (transformer "
            f"{entry['transformer_s_median'] * 1e3:.1f}, vae {entry['vae_decode_s_median'] * 1e3:.1f}); bound "
            f"{result['bound_transformer_s'] * 1e3:.1f} + {vae_bound * 1e3:.1f} ms -> x{entry['ratio_total_to_bound']:.2f}"
            f"; first call {first[mode]:.2f} s"
        )
        print("  per-scale ms: " + " ".join(f"{t * 1e3:.2f}" for t in per_scale))
    if {"eager", "compiled"} <= set(args.modes):
        result["ratio_eager_over_compiled"] = (
            result["modes"]["eager"]["total_s_median"] / result["modes"]["compiled"]["total_s_median"]
        )
    result["peak_memory_gib"] = (result["peak_memory_bytes"] or 0) / 2**30
    out = args.output or Path(os.environ.get("OUT", ".")) / "ar_gpu_2b.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"peak memory {result['peak_memory_gib']:.2f} GiB; wrote {out}")
    return result


if __name__ == "__main__":
    main()
