"""CPU benchmark of the bitwise tokenizer: encode/decode images/s, peak memory, and the quantiser's share of the time.

Architecture: the released d32 tokenizer (base 128, ch_mult (1,2,4,4,4), 2 res blocks; 110M parameters) with random
weights, fp32, batch 1, at 256x256 (7 scales) and 512x512 (10 scales), official 1:1 schedules.

Each (size, direction) runs in its own process so the peak-memory numbers do not mix: peak resident memory is read
from /proc (VmHWM, reset after the model is built), and reported both absolute and above the post-load baseline.

    uv run python bench/bench_tokenizer.py [--sizes 256,512] [--reps 2] [--output bench/results/tokenizer.json]

Times are medians over ``--reps`` timed runs after one warm-up run; wall-clock images/s plus the process CPU
seconds per image (less sensitive to other load on a shared machine) and the 1-minute load average are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "tokenizer.json"


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def child(size: int, direction: str, reps: int) -> dict:
    """Time one direction at one size inside this (fresh) process."""
    import torch
    from bsq_tokenizer import PRESETS, BSQTokenizer
    from bsq_tokenizer.multiscale import multiscale_quantize, summed_codes_from_bits
    from bsq_tokenizer.schedules import schedule_for_latent

    torch.manual_seed(0)
    model = BSQTokenizer(PRESETS["d32"]).eval()
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    schedule = schedule_for_latent(size // 16, size // 16)
    with torch.inference_mode():
        features = model.encode_features(images)
        bits, summed = multiscale_quantize(features, schedule)
    baseline = _rss_kib("VmRSS")
    reset = _reset_peak()
    stages: dict[str, list[float]] = {"net": [], "quantizer": [], "cpu": []}
    with torch.inference_mode():
        for rep in range(reps + 1):
            c0 = time.process_time()
            if direction == "encode":
                t0 = time.perf_counter()
                features = model.encode_features(images)
                t1 = time.perf_counter()
                multiscale_quantize(features, schedule)
                t2 = time.perf_counter()
                net, quant = t1 - t0, t2 - t1
            else:
                t0 = time.perf_counter()
                summed = summed_codes_from_bits(bits, schedule)
                t1 = time.perf_counter()
                model.decode_features(summed)
                t2 = time.perf_counter()
                net, quant = t2 - t1, t1 - t0
            if rep > 0:  # rep 0 is the warm-up
                stages["cpu"].append(time.process_time() - c0)
                stages["net"].append(net)
                stages["quantizer"].append(quant)
    peak = _rss_kib("VmHWM")
    total = [a + b for a, b in zip(stages["net"], stages["quantizer"])]
    seconds = statistics.median(total)
    return {
        "size": size,
        "direction": direction,
        "num_scales": len(schedule),
        "seconds_per_image": seconds,
        "images_per_second": 1.0 / seconds,
        "cpu_seconds_per_image": statistics.median(stages["cpu"]),
        "quantizer_seconds": statistics.median(stages["quantizer"]),
        "quantizer_fraction": statistics.median(q / t for q, t in zip(stages["quantizer"], total)),
        "peak_rss_mib": peak / 1024,
        "peak_above_loaded_model_mib": (peak - baseline) / 1024 if reset else None,
        "timed_runs": reps,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,512", help="comma-separated square image sizes (multiples of 16)")
    parser.add_argument("--reps", type=int, default=2, help="timed runs per measurement (after one warm-up)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "DIRECTION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.reps)))
        return 0

    import torch

    load_at_start = os.getloadavg()[0]
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for direction in ("encode", "decode"):
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(size), direction, "--reps", str(args.reps)],
                capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return proc.returncode
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"{size}x{size} {direction}: {row['images_per_second']:.3f} img/s ({row['seconds_per_image']:.2f} s), "
                f"peak RSS {row['peak_rss_mib']:.0f} MiB (+{row['peak_above_loaded_model_mib'] or float('nan'):.0f} MiB over the "
                f"loaded model), quantiser {100 * row['quantizer_fraction']:.2f}% "
                f"[{time.perf_counter() - started:.0f} s wall]",
                flush=True,
            )
    result = {
        "benchmark": "bsq-tokenizer CPU encode/decode, d32 architecture (random weights), fp32, batch 1",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_1min_at_start": load_at_start,
            "load_average_1min_at_end": os.getloadavg()[0],
        },
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
