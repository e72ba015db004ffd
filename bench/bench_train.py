"""CPU training-throughput benchmark: tokens/s and step time split into data / prepare / forward / backward.

Configs: the ``debug`` preset on 64x64 ShapesT2I and the ``infinity-125m`` shape on 256x256 (0.06M, 521 tokens),
both with a random frozen tokenizer and word-hash text features (T5 excluded, as in the perf-notes protocol).
"prepare" = tokenizer encode + Bitwise Self-Correction + text features. CPU numbers are not GPU speed claims.

    python bench/bench_train.py [--steps 3] [--output bench/results/train_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bitwise_ar.train.config import load_config
from bitwise_ar.train.trainer import ARTrainer

CONFIGS = {
    "debug_64px_b8": ["model.preset=debug", "data.image_size=64", "data.batch_size=8"],
    "125m_256px_b1": ["model.preset=infinity-125m", "data.image_size=256", "data.batch_size=1", "model.overrides.drop_path_rate=0.0"],
}


def step_flops(trainer: ARTrainer) -> float:
    """Exact forward + backward FLOPs of one training step's transformer (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    prepared = trainer.prepare(*next(iter(trainer.source)))
    with FlopCounterMode(display=False) as counter:
        loss, _ = trainer.forward_loss(prepared)
        loss.backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def measure(
    overrides: list[str], *, steps: int, warmup: int = 1, out_dir: str | None = None, config_path: str | None = None
) -> dict:
    """Train ``warmup + steps`` steps (of ``config_path``, default the built-in config, with ``overrides``) and return
    medians of the timing split, tokens/s and achieved FLOP/s."""
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(
            config_path, [f"run.out_dir={out_dir or tmp}", "run.checkpoint_every=0", f"train.steps={warmup + steps + 1}", *overrides]
        )
        trainer = ARTrainer(config)
        flops = step_flops(trainer)
        iterator = iter(trainer.source)
        rows = []
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            batch = next(iterator)
            data_s = time.perf_counter() - t0
            metrics = trainer.train_step([batch])
            total = time.perf_counter() - t0
            if i >= warmup:
                rows.append({**metrics, "time/data_s": data_s, "time/step_s": total})
    med = {k: statistics.median(r[k] for r in rows) for k in ("time/data_s", "time/prepare_s", "time/forward_s", "time/backward_s", "time/step_s")}
    tokens = rows[0]["train/tokens"]
    return {
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "tokens_per_step": tokens,
        "step_flops_fwd_bwd": flops,
        **{k.replace("time/", "median_"): v for k, v in med.items()},
        "tokens_per_s": tokens / med["time/step_s"],
        "achieved_gflops": flops / (med["time/forward_s"] + med["time/backward_s"]) / 1e9,
        "steps_timed": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "train_cpu.json"))
    args = parser.parse_args()
    results = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "note": "shared 2-core CPU, fp32, random tokenizer + hash text features; ratios and splits only, not GPU speed",
        "configs": {},
    }
    for name in args.configs:
        results["configs"][name] = measure(["data.source=shapes", *CONFIGS[name]], steps=args.steps)  # infinity-shapes
        print(name, json.dumps(results["configs"][name], indent=2))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
