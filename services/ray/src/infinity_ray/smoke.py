"""A small real job for checking a cluster end to end: ShapesT2I rendering and ShapesEval scoring as Ray tasks.

``python -m infinity_ray.smoke --num-samples 8`` connects to the cluster it is submitted to (``ray.init()`` picks up
``RAY_ADDRESS``), renders ground-truth ShapesT2I samples in parallel tasks, scores each with the analytic ShapesEval
scorer, and exits non-zero unless every ground-truth image is judged correct. It exercises the job server, the
runtime environment (the repository's packages import on the workers) and task scheduling in about a second of work.
"""

from __future__ import annotations

import argparse
import json
import sys


def _score_sample(index: int, seed: int) -> dict[str, object]:
    from infinity_shapes import ShapesT2I, parse_caption, score_image

    sample = ShapesT2I(length=index + 1, seed=seed)[index]
    result = score_image(sample.image, parse_caption(sample.caption))
    return {"index": index, "caption": sample.caption, "correct": bool(result.correct)}


def run(num_samples: int, seed: int = 0) -> dict[str, object]:
    """Score ``num_samples`` ground-truth samples in Ray tasks; return a summary."""
    import ray

    if not ray.is_initialized():
        ray.init()
    # One CPU per task: on a one-CPU head the tasks share one worker process (each new worker imports torch, which
    # dominates the run time); on a cluster they spread over the CPUs.
    task = ray.remote(num_cpus=1)(_score_sample)
    results = ray.get([task.remote(i, seed) for i in range(num_samples)])
    return {
        "num_samples": num_samples,
        "num_correct": sum(bool(r["correct"]) for r in results),
        "nodes": len(ray.nodes()),
        "ray_version": ray.__version__,
        "examples": [r["caption"] for r in results[:3]],
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry: print the JSON summary; exit 1 when a ground-truth sample is scored wrong."""
    parser = argparse.ArgumentParser(prog="python -m infinity_ray.smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.num_samples < 1:
        print("smoke: --num-samples must be >= 1", file=sys.stderr)
        return 2
    summary = run(args.num_samples, args.seed)
    print("SMOKE_RESULT " + json.dumps(summary, sort_keys=True))
    return 0 if summary["num_correct"] == summary["num_samples"] else 1


if __name__ == "__main__":
    sys.exit(main())
