"""GPU benchmark: Infinity-2B shape at 1024x1024, random weights, bf16 blocks, batch 1 with CFG (2 rows).

Measures end-to-end latency (transformer sampling + VAE decode; T5 replaced by 64 random text tokens, as in the perf
notes protocol), per-scale times (CUDA events), peak memory, and the ratio to the per-scale compute/bandwidth bound.
``--tiny`` runs the same code on CPU with a tiny model at 256x256 so the script cannot fail on a bug when a GPU slot
comes (it is exercised by the test suite).

    python bench/gpu_ar_2b.py [--tiny] [--reps 10] [--warmup 3] [--output $OUT/ar_gpu_2b.json]
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


def build(tiny: bool, device: torch.device, dtype: torch.dtype):
    from bsq_tokenizer import PRESETS as TOKENIZER_PRESETS
    from bsq_tokenizer import BSQTokenizer

    if tiny:
        config = PRESETS["debug"].replace(codebook_dim=32, text_channels=2048, text_maxlen=512)
        schedule = [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16)]
        vae_config = TOKENIZER_PRESETS["debug"].__class__(**{**TOKENIZER_PRESETS["debug"].to_dict(), "codebook_dim": 32})
    else:
        from bsq_tokenizer.schedules import get_scale_schedule

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
        with torch.autocast(device.type, dtype=vae_dtype, enabled=vae_dtype != torch.float32):
            image = vae.decode_features(summed)
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
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU at 256x256 (smoke test)")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--vae-dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--output", type=Path, default=None, help="JSON output (default: $OUT/ar_gpu_2b.json or ./)")
    args = parser.parse_args(argv)

    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    vae_dtype = torch.bfloat16 if args.vae_dtype == "bf16" else torch.float32
    model, vae, layout = build(args.tiny, device, dtype)
    gen = torch.Generator(device=device).manual_seed(1)
    text = PackedText(torch.randn(64, model.config.text_channels, device=device, generator=gen), (64,))
    settings = SamplingConfig(cfg=4.0, tau=1.0, top_k=900, top_p=0.97)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base_mem = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    t_first = one_image(model, vae, layout, text, settings, device, 0, vae_dtype)[0]
    for i in range(max(0, args.warmup - 1)):
        one_image(model, vae, layout, text, settings, device, i + 1, vae_dtype)
    runs = [one_image(model, vae, layout, text, settings, device, 100 + i, vae_dtype) for i in range(args.reps)]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    key = next((k for k in GPU_PEAKS if k in name), "H100")
    peak_flops, bandwidth = GPU_PEAKS[key]
    bounds = roofline_seconds(model.config, layout.schedule, peak_flops, bandwidth)
    vae_bound = VAE_DECODE_FLOPS_1024 * (layout.schedule[-1][0] * layout.schedule[-1][1] / 4096) / peak_flops
    med = lambda xs: statistics.median(xs)  # noqa: E731
    per_scale = [med(r[3][k] for r in runs) for k in range(layout.num_scales)]
    result = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "tiny": args.tiny,
        "config": "debug-like tiny" if args.tiny else "infinity-2b (C 2048, depth 32, 16 heads)",
        "schedule": [list(s) for s in layout.schedule],
        "tokens": layout.total_tokens,
        "batch": 1,
        "cfg_rows": 2,
        "block_dtype": str(dtype),
        "vae_dtype": str(vae_dtype),
        "text": "64 random text tokens (T5 excluded)",
        "warmup": args.warmup,
        "reps": args.reps,
        "first_call_s": t_first,
        "total_s_median": med(r[0] for r in runs),
        "total_s_min": min(r[0] for r in runs),
        "transformer_s_median": med(r[1] for r in runs),
        "vae_decode_s_median": med(r[2] for r in runs),
        "per_scale_s_median": per_scale,
        "peak_memory_bytes": peak,
        "memory_before_run_bytes": base_mem,
        "memory_estimate_bytes": inference_memory_bytes(model.config, layout.schedule, text_tokens=64),
        "flops_per_image": flops_per_image(model.config, layout.schedule),
        "bound_gpu": key,
        "bound_per_scale_s": bounds,
        "bound_transformer_s": sum(bounds),
        "bound_vae_s": vae_bound,
    }
    result["ratio_transformer_to_bound"] = result["transformer_s_median"] / result["bound_transformer_s"]
    result["ratio_total_to_bound"] = result["total_s_median"] / (result["bound_transformer_s"] + vae_bound)
    out = args.output or Path(os.environ.get("OUT", ".")) / "ar_gpu_2b.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{name}: total {result['total_s_median'] * 1e3:.1f} ms (transformer {result['transformer_s_median'] * 1e3:.1f}, "
        f"vae {result['vae_decode_s_median'] * 1e3:.1f}); bound {result['bound_transformer_s'] * 1e3:.1f} + "
        f"{vae_bound * 1e3:.1f} ms -> x{result['ratio_total_to_bound']:.2f}; peak mem "
        f"{(peak or 0) / 2**30:.2f} GiB; first call {t_first:.2f} s"
    )
    print("per-scale ms: " + " ".join(f"{t * 1e3:.2f}" for t in per_scale))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
