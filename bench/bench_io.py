"""Peak resident memory to load a >= 1 GB checkpoint: the removed whole-file reader vs the memory-mapped model I/O.

The checkpoint is an ``InfinityTransformer`` directory (``save_pretrained`` layout: ``config.json`` +
``model.safetensors``) of the ``infinity-layer16`` architecture (361M parameters, 1.45 GB in float32) with random
weights. Each measurement runs in a fresh process, old and new alternating:

* ``whole_file`` (before): the reader removed in favour of ``safetensors``: read the whole file into memory, copy
  every tensor out of it, then build the model on the meta device and assign the copies;
* ``mmap`` (now): ``InfinityTransformer.from_pretrained(path)``, the memory-mapped path of ``bsq_tokenizer.model_io``;
* ``mmap_bf16`` (for reference): the same with ``dtype=torch.bfloat16`` (each tensor cast as it is read).

Every process first touches every parameter (a checksum), so pages a lazy load did not read yet are counted too.
Reported per mode: peak RSS above the process's RSS before loading (VmHWM - VmRSS, from /proc), as a multiple of the
file size, and the load time. Results: ``bench/results/io.json``.

    uv run python bench/bench_io.py [--preset infinity-layer16] [--reps 2] [--output bench/results/io.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "io.json"
MODES = ("whole_file", "mmap", "mmap_bf16")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _read_whole_file(path: Path):
    """What the removed hand-written reader did: the whole file in memory, then a copy of every tensor's bytes."""
    import torch

    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64}
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    header.pop("__metadata__", None)
    body = memoryview(raw)[8 + header_len :]
    state = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype, shape = dtypes[info["dtype"]], info["shape"]
        chunk = bytearray(body[begin:end])
        state[name] = torch.frombuffer(chunk, dtype=dtype).reshape(shape) if chunk else torch.empty(shape, dtype=dtype)
    del raw, body
    return state


def child(directory: Path, mode: str) -> dict:
    """Load the checkpoint in this fresh process; report peak RSS above the pre-load RSS."""
    import torch
    from bitwise_ar.model import InfinityTransformer
    from bitwise_ar.model.state_dict import build_strict
    from bitwise_ar.weights import WEIGHTS_FILE, read_config

    with torch.device("meta"):  # import-time and first-use allocations out of the measurement
        InfinityTransformer(read_config(directory))
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    if mode == "whole_file":
        state = _read_whole_file(directory / WEIGHTS_FILE)
        config = read_config(directory)
        model = build_strict(lambda: InfinityTransformer(config), state, str(directory), device=None, dtype=None)
        del state
    elif mode == "mmap":
        model = InfinityTransformer.from_pretrained(directory)
    elif mode == "mmap_bf16":
        model = InfinityTransformer.from_pretrained(directory, dtype=torch.bfloat16)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    seconds = time.perf_counter() - start
    with torch.no_grad():  # touch every byte: a lazily mapped page not read yet would hide from RSS
        checksum = sum(float(t.sum(dtype=torch.float64)) for t in model.state_dict().values())
    after = _status_kib("VmRSS")
    peak = _status_kib("VmHWM")
    return {
        "mode": mode,
        "load_seconds": seconds,
        "rss_before_mib": before / 1024,
        "peak_rss_mib": peak / 1024,
        "peak_above_before_mib": (peak - before) / 1024,
        "rss_after_touch_above_before_mib": (after - before) / 1024,
        "parameters": model.num_parameters(),
        "checksum_finite": math.isfinite(checksum),
    }


def _write_checkpoint(directory: Path, preset: str) -> int:
    import torch
    from bitwise_ar.config import get_preset
    from bitwise_ar.model import InfinityTransformer
    from bitwise_ar.weights import FORMAT, WEIGHTS_FILE
    from bsq_tokenizer.model_io import save_model_dir

    config = get_preset(preset)
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in InfinityTransformer(config).state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=generator, dtype=dtype) * 0.02 for k, (shape, dtype) in shapes.items()}
    save_model_dir(directory, state, format=FORMAT, config=config.to_dict())
    return (directory / WEIGHTS_FILE).stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="infinity-layer16", help="InfinityTransformer preset (>= 1 GB in fp32)")
    parser.add_argument("--reps", type=int, default=2, help="fresh processes per mode (old and new alternate)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=2, metavar=("DIR", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1])))
        return 0

    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_io_") as tmp:
        directory = Path(tmp) / "transformer"
        started = time.perf_counter()
        size = _write_checkpoint(directory, args.preset)
        print(f"wrote {size / 2**30:.2f} GiB checkpoint ({args.preset}) in {time.perf_counter() - started:.0f} s", flush=True)
        if size < 2**30 * 0.93:  # 1 GB = 0.93 GiB
            print(f"warning: the checkpoint is {size / 1e9:.2f} GB, under 1 GB", file=sys.stderr)
        rows: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for rep in range(args.reps):
            for mode in MODES:
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", str(directory), mode], capture_output=True, text=True, check=False
                )
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return proc.returncode
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows[mode].append(row)
                print(
                    f"[{rep + 1}/{args.reps}] {mode:10s}: peak +{row['peak_above_before_mib']:.0f} MiB "
                    f"({row['peak_above_before_mib'] * 2**20 / size:.2f}x the file), load {row['load_seconds']:.2f} s",
                    flush=True,
                )
    summary = {}
    for mode, runs in rows.items():
        peak = statistics.median(r["peak_above_before_mib"] for r in runs)
        summary[mode] = {
            "peak_above_before_mib": peak,
            "peak_over_file_size": peak * 2**20 / size,
            "load_seconds": statistics.median(r["load_seconds"] for r in runs),
            "runs": runs,
        }
    ratios = {
        "whole_file_peak_over_mmap_peak": summary["whole_file"]["peak_above_before_mib"]
        / summary["mmap"]["peak_above_before_mib"],
        "mmap_peak_over_file_size": summary["mmap"]["peak_over_file_size"],
        "whole_file_peak_over_file_size": summary["whole_file"]["peak_over_file_size"],
    }
    result = {
        "benchmark": "peak RSS to load a transformer checkpoint: whole-file read + copies (removed reader) vs mmap",
        "checkpoint": {"preset": args.preset, "bytes": size, "dtype": "float32"},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_start": list(load_at_start),
            "loadavg_at_end": list(os.getloadavg()),
        },
        "reps": args.reps,
        "summary": summary,
        "ratios": ratios,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"file {size / 2**20:.0f} MiB | peak above pre-load RSS: whole file {summary['whole_file']['peak_over_file_size']:.2f}x, "
        f"mmap {summary['mmap']['peak_over_file_size']:.2f}x, mmap+bf16 {summary['mmap_bf16']['peak_over_file_size']:.2f}x "
        f"the file size | whole file / mmap = {ratios['whole_file_peak_over_mmap_peak']:.2f} -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
