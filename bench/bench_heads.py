"""IVC head vs conventional 2^d-way index head on the ShapesT2I demo configuration: parameters, training FLOPs
per step (FlopCounterMode, forward + backward) and CPU step time, side by side, with the index/IVC ratios.

Both arms use ``configs/train/shapes_demo.toml`` with row layouts and the committed demo tokenizer (d = 16) and
text encoder, as the d = 16 ablation in docs/training.md; only ``model.overrides.head_type`` differs.

    python bench/bench_heads.py [--steps 3] [--output bench/results/heads_d16.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_train import step_flops
from bitwise_ar.train.config import load_config
from bitwise_ar.train.trainer import ARTrainer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "packages" / "bitwise-ar" / "src" / "bitwise_ar" / "demo_model"
HEADS = {"ivc": [], "index": ['model.overrides.head_type="index"']}


def measure(head: str, *, steps: int) -> dict:
    """Parameters, FLOPs per training step and the median step time of one head on the demo configuration."""
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(
            str(ROOT / "configs" / "train" / "shapes_demo.toml"),
            [
                f"run.out_dir={tmp}",
                "run.checkpoint_every=0",
                f"model.tokenizer={DEMO / 'tokenizer'}",
                f"model.text_encoder={DEMO / 'text_encoder'}",
                "data.shapes_rows=true",
                *HEADS[head],
            ],
        )
        trainer = ARTrainer(config)
        flops = step_flops(trainer)
        batches = iter(trainer.source)
        times = []
        for i in range(steps + 1):  # the first step warms up
            t0 = time.perf_counter()
            trainer.train_step([next(batches)])
            if i:
                times.append(time.perf_counter() - t0)
        head_params = sum(p.numel() for n, p in trainer.model.named_parameters() if n.startswith("head."))
        return {
            "params": sum(p.numel() for p in trainer.model.parameters()),
            "head_params": head_params,
            "step_flops_fwd_bwd": flops,
            "median_step_s": statistics.median(times),
            "steps_timed": steps,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "heads_d16.json"))
    args = parser.parse_args()
    results = {name: measure(name, steps=args.steps) for name in HEADS}
    ratios = {key: results["index"][key] / results["ivc"][key] for key in ("params", "step_flops_fwd_bwd", "median_step_s")}
    out = {
        "note": "shapes_demo.toml + row layouts, committed demo tokenizer (d=16) and T5, batch 32, fp32 CPU; ratios = index / IVC",
        "threads": torch.get_num_threads(),
        **results,
        "index_over_ivc": ratios,
    }
    for name, row in results.items():
        print(f"{name:6s} params {row['params']:>10,d} (head {row['head_params']:>9,d})  "
              f"{row['step_flops_fwd_bwd'] / 1e9:7.1f} GFLOP/step  {row['median_step_s']:.2f} s/step")
    print("index / IVC: " + ", ".join(f"{k} {v:.1f}x" for k, v in ratios.items()))
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
