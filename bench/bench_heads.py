"""IVC head vs conventional 2^d-way index head on the ShapesT2I demo configuration: parameters, training FLOPs
per step (FlopCounterMode, forward + backward) and CPU step time, side by side, with the index/IVC ratios.

Both arms use the demo recipe's config (``infinity_shapes.recipe.DEMO_CONFIG``) with row layouts and the committed demo tokenizer (d = 16) and
text encoder, as the d = 16 ablation in docs/training.md; only ``model.overrides.head_type`` differs.

    python bench/bench_heads.py [--steps 3] [--output bench/results/heads_d16.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from bench_train import measure
from infinity_shapes.recipe import DEMO_CONFIG

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "packages" / "bitwise-ar" / "src" / "bitwise_ar" / "demo_model"
COMMON = [f"model.tokenizer={DEMO / 'tokenizer'}", f"model.text_encoder={DEMO / 'text_encoder'}", "data.options.rows=true"]
HEADS = {"ivc": [], "index": ['model.overrides.head_type="index"']}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "heads_d16.json"))
    args = parser.parse_args()
    results = {name: measure([*COMMON, *extra], steps=args.steps, config_path=str(DEMO_CONFIG)) for name, extra in HEADS.items()}
    ratios = {key: results["index"][key] / results["ivc"][key] for key in ("params", "step_flops_fwd_bwd", "median_step_s")}
    for name, row in results.items():
        print(f"{name:6s} params {row['params']:>10,d}  {row['step_flops_fwd_bwd'] / 1e9:7.1f} GFLOP/step  "
              f"{row['median_step_s']:.2f} s/step (forward {row['median_forward_s']:.2f}, backward {row['median_backward_s']:.2f})")
    print("index / IVC: " + ", ".join(f"{k} {v:.1f}x" for k, v in ratios.items()))
    out = {
        "note": "shapes_demo.toml + row layouts, committed demo tokenizer (d=16) and T5, batch 32, fp32 CPU; ratios = index / IVC",
        "threads": torch.get_num_threads(),
        **results,
        "index_over_ivc": ratios,
    }
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
