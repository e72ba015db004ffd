"""LoRA vs full fine-tuning of the same model on the same batch: trainable parameters, optimiser state, peak memory,
step time, measured side by side in one run.

Each arm trains in its own child process (so one arm's peak memory cannot hide the other's): a frozen base plus
rank-``--rank`` adapters on every block projection (``lora.rank``), and the full model. Memory is
``torch.cuda.max_memory_allocated`` on CUDA, else the process's peak resident set (``ru_maxrss``) and its growth
over the training steps (peak minus the resident set after the trainer was built: gradients, AdamW state and
activations). Default: the ``infinity-125m`` shape at 256x256 (521 tokens), batch 1, random frozen tokenizer and
word-hash text features (T5 excluded), a few minutes on a CPU.

    python bench/bench_lora.py [--steps 2] [--rank 16] [--output bench/results/lora_cpu.json]
    python bench/bench_lora.py --tiny        # the debug preset, seconds (tested)
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bitwise_ar.lora import adapter_parameters
from bitwise_ar.train.config import load_config
from bitwise_ar.train.trainer import ARTrainer

SHAPES = {
    "125m_256px_b1": ["model.preset=infinity-125m", "data.image_size=256", "data.batch_size=1"],
    "tiny": ["model.preset=debug", "data.image_size=32", "data.batch_size=2"],
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))


def run_arm(shape: str, rank: int, steps: int) -> dict:
    """One arm in this process: build the trainer, train 1 warm-up + ``steps`` steps, report memory and time."""
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [*SHAPES[shape], "data.source=synthetic", f"run.out_dir={tmp}", "run.checkpoint_every=0",
                     f"train.steps={steps + 2}",
                     "model.overrides.drop_path_rate=0.0", f"lora.rank={rank}", "lora.alpha=16"]  # fmt: skip
        trainer = ARTrainer(load_config(None, overrides), device="cuda" if torch.cuda.is_available() else "cpu")
        cuda = trainer.device.type == "cuda"
        rss_built = _rss_bytes()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        batches = iter(trainer.source)
        times = []
        for i in range(steps + 1):
            batch = next(batches)
            t0 = time.perf_counter()
            trainer.train_step([batch])
            if cuda:
                torch.cuda.synchronize()
            if i:  # the first step is warm-up (allocator, AdamW state creation)
                times.append(time.perf_counter() - t0)
        model = trainer.model
        out = {
            "lora_rank": rank,
            "total_params": sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "adapter_params": adapter_parameters(model),
            "optimizer_state_bytes": _state_bytes(trainer.optimizer),
            "median_step_s": sorted(times)[len(times) // 2],
            "device": str(trainer.device),
        }
        if cuda:
            out["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
        out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["rss_after_build_bytes"] = rss_built
        out["rss_growth_training_bytes"] = out["peak_rss_bytes"] - rss_built
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--tiny", action="store_true", help="the debug preset (seconds; what the test runs)")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "lora_cpu.json"))
    parser.add_argument("--arm", default=None, help=argparse.SUPPRESS)  # internal: run one arm, print its JSON
    args = parser.parse_args()
    shape = "tiny" if args.tiny else "125m_256px_b1"
    if args.arm is not None:
        print(json.dumps(run_arm(shape, int(args.arm), args.steps)))
        return
    arms = {}
    for name, rank in (("lora", args.rank), ("full", 0)):
        cmd = [sys.executable, __file__, "--arm", str(rank), "--steps", str(args.steps), *(["--tiny"] if args.tiny else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"arm {name} failed:\n{proc.stderr[-3000:]}")
        arms[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    lora, full = arms["lora"], arms["full"]
    memory_key = "peak_cuda_bytes" if "peak_cuda_bytes" in full else "rss_growth_training_bytes"
    result = {
        "benchmark": "LoRA vs full fine-tuning, same model and batch, one run",
        "shape": shape,
        "overrides": SHAPES[shape],
        "steps_timed": args.steps,
        "arms": arms,
        "ratios": {
            "trainable_params_lora_over_full": lora["trainable_params"] / full["trainable_params"],
            "optimizer_state_lora_over_full": lora["optimizer_state_bytes"] / full["optimizer_state_bytes"],
            f"{memory_key}_lora_over_full": lora[memory_key] / full[memory_key],
            "peak_rss_lora_over_full": lora["peak_rss_bytes"] / full["peak_rss_bytes"],
            "step_time_lora_over_full": lora["median_step_s"] / full["median_step_s"],
        },
        "host": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))


if __name__ == "__main__":
    main()
