"""GPU training benchmark: Infinity-2B shape at 256x256 (0.06M, 521 tokens), bf16 autocast, full-block activation
checkpointing, AdamW; reports step time, tokens/s and MFU (model FLOPs counted exactly with FlopCounterMode, without
the recompute, against the GPU's dense bf16 peak).

Random weights, a random frozen d32 tokenizer and word-hash text features (T5 excluded): the cost of a step does not
depend on the values. ``--tiny`` runs the same code on CPU with the ``debug`` preset (exercised by the tests).

``--fsdp`` trains through FSDP2 in a one-rank process group (NCCL; gloo with ``--tiny``): bf16 compute and fp32
gradient reduction by FSDP's ``MixedPrecisionPolicy``, the path multi-GPU runs take.

    python bench/gpu_train.py [--tiny] [--fsdp] [--batch 16] [--steps 5] [--warmup 2] [--output $OUT/train_gpu_2b.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import step_flops
from bitwise_ar.train.config import load_config
from bitwise_ar.train.trainer import ARTrainer

PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with the debug preset")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "chunked", "flex"])
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="override the dense bf16 peak (TFLOP/s)")
    parser.add_argument("--fsdp", action="store_true", help="train through FSDP2 in a one-rank process group")
    parser.add_argument("--output", default="train_gpu_2b.json")
    args = parser.parse_args()
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; use --tiny for the CPU smoke run")
    if args.fsdp:
        import os
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(s.getsockname()[1]))
        torch.distributed.init_process_group("nccl" if device == "cuda" else "gloo", rank=0, world_size=1)
    overrides = (
        ["model.preset=debug", "data.image_size=64", f"data.batch_size={min(args.batch, 2)}", "train.precision=fp32"]
        if args.tiny
        else ["model.preset=infinity-2b", "data.image_size=256", f"data.batch_size={args.batch}", "train.precision=bf16",
              "train.activation_checkpointing=true", "model.overrides.drop_path_rate=0.0"]
    )
    steps = 1 if args.tiny else args.steps
    warmup = 1 if args.tiny else args.warmup
    config = load_config(None, ["run.out_dir=/tmp/gpu_train_bench", "data.source=synthetic", "run.checkpoint_every=0", f"train.steps={steps + warmup + 1}",
                                f"train.attention={args.attention}", *overrides])
    trainer = ARTrainer(config, device=device, strategy="fsdp" if args.fsdp else "none")
    flops = step_flops(trainer)
    iterator = iter(trainer.source)
    batches = [next(iterator) for _ in range(steps + warmup)]
    times = []
    for i, batch in enumerate(batches):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        metrics = trainer.train_step([batch])
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t0, metrics))
    step_s = sorted(t for t, _ in times)[len(times) // 2]
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    peak = args.peak_tflops * 1e12 or next((v for k, v in PEAKS.items() if k in name), 0.0)
    tokens = times[0][1]["train/tokens"]
    result = {
        "device": name,
        "torch": torch.__version__,
        "preset": config.model.preset,
        "strategy": trainer.strategy,
        "batch": config.data.batch_size,
        "tokens_per_step": tokens,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "model_flops_per_step": flops,
        "median_step_s": step_s,
        "tokens_per_s": tokens / step_s,
        "achieved_tflops": flops / step_s / 1e12,
        "mfu": flops / step_s / peak if peak else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "split_last_step": {k: v for k, v in times[-1][1].items() if k.startswith("time/")},
        "steps_timed": len(times),
        "note": "includes random-tokenizer encode + BSC + hash text features; MFU counts fwd+bwd model FLOPs, not recompute",
    }
    print(json.dumps(result, indent=2))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
