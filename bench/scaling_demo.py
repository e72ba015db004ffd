"""The scaling report (``infinity-eval scaling``) on the ShapesT2I demo: several tiny model sizes trained on 2 CPU
cores, each logging its own validation loss, ShapesEval at every checkpoint, all in one MLflow sqlite store.

    uv run python bench/scaling_demo.py WORK_DIR [--sizes 64x2,128x4] [--steps 400] [--every 100] [--val-every 50]
                                        [--prompts 48] [--val-images 64] [--results bench/results]

Per size ``<width>x<depth>`` (the demo preset with that ``embed_dim`` and ``depth``; the committed demo tokenizer and
caption-pretrained text encoder of ``bitwise_ar/demo_model``): an :class:`ARTrainer` logs to a training run (tags
``scaling.size``, ``scaling.num_params``, ``scaling.flops_per_step`` = batch x ``training_flops_per_sample``) and,
through its ``[val]`` section, its own validation loss every ``--val-every`` steps on ``--val-images`` held-out
ShapesT2I renders (``val.source = "shapes"``, seed 999, never trained on; ``val_loss/bit_ce`` and per scale). Every
``--every`` steps the model is exported and ShapesEval on ``--prompts`` standard prompts is logged to an eval run
tagged with the training run and step. Then :func:`scaling_report` reads the training runs' curves and the eval runs'
metrics and writes the PNGs and HTML; the PNGs and a JSON summary are copied to ``--results``.

Committed result (``bench/results/scaling_demo*.{json,png}``): see ``command`` and ``settings`` in the JSON; the
numbers are discussed in packages/infinity-eval/README.md ("Scaling report").
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import bitwise_ar
import mlflow
import numpy as np
from bitwise_ar.costs import training_flops_per_sample
from bitwise_ar.train.config import load_config
from bitwise_ar.train.trainer import ARTrainer
from infinity_eval.scaling import scaling_report, tag_eval_run, tag_training_run
from infinity_run.tracking import MLflowTracker
from infinity_shapes.recipe import DEMO_CONFIG, evaluate_pipeline, export_pipeline

REPO = Path(__file__).resolve().parents[1]
DEMO = Path(bitwise_ar.__file__).resolve().parent / "demo_model"
EXPERIMENT = "shapes-scaling"


def val_curve(uri: str, run_id: str) -> dict[int, float]:
    """The validation loss the trainer logged to its run, by step."""
    history = mlflow.MlflowClient(tracking_uri=uri).get_metric_history(run_id, "val_loss/bit_ce")
    return {m.step: m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))}


def train_size(work: Path, uri: str, width: int, depth: int, args: argparse.Namespace) -> dict:
    size = f"w{width}d{depth}"
    heads = max(1, width // 32)
    config = load_config(DEMO_CONFIG, [
        f"run.out_dir={work / size}", f"model.tokenizer={DEMO / 'tokenizer'}", f"model.text_encoder={DEMO / 'text_encoder'}",
        f"model.overrides.embed_dim={width}", f"model.overrides.depth={depth}", f"model.overrides.num_heads={heads}",
        f"train.steps={args.steps}", f"data.batch_size={args.batch_size}", f"optim.warmup_steps={args.steps // 10}",
        "run.checkpoint_every=0", f"run.log_every={args.val_every}",
        # the held-out validation loss, logged by the trainer itself: ShapesT2I renders of another seed
        "val.source=shapes", "val.seed=999", "val.image_size=64", "val.options.ordered=true", "val.options.rows=true",
        f"val.batch_size={args.val_batch}", f"val.batches={args.val_images // args.val_batch}", f"val.every={args.val_every}",
    ])
    tracker = MLflowTracker(experiment=EXPERIMENT, run_name=f"train/{size}", tracking_uri=uri, system_metrics=False)
    trainer = ARTrainer(config, device="cpu", tracker=tracker)
    num_params = sum(p.numel() for p in trainer.model.parameters())
    timings, rows = [], []

    while trainer.step < args.steps:
        t0 = time.perf_counter()
        trainer.fit(max_steps=args.every)
        timings.append(time.perf_counter() - t0)
        step = trainer.step
        if step == args.every:  # the schedule is known after the first step
            per_sample = training_flops_per_sample(trainer.model_config, trainer.last_schedule,
                                                   text_tokens=trainer.model_config.text_maxlen)
            tag_training_run(uri, tracker.run_id, size=size, num_params=num_params,
                             flops_per_step=per_sample * args.batch_size)
        curve = val_curve(uri, tracker.run_id)  # what the trainer logged so far
        pipe = export_pipeline(trainer, str(work / size / f"pipeline_{step:05d}"))
        result, _, _ = evaluate_pipeline(pipe, num_prompts=args.prompts)
        scores = {"shapes/overall": result.overall, **{f"shapes/{k}": v for k, v in result.per_task.items()},
                  **{f"shapes/check/{k}": v for k, v in result.per_check.items()}}  # checks pass before whole prompts do
        evaluation = MLflowTracker(experiment=EXPERIMENT, run_name=f"eval/{size}/{step}", tracking_uri=uri, system_metrics=False)
        evaluation.log_metrics(scores, step)
        evaluation.finish()
        tag_eval_run(uri, evaluation.run_id, train_run_id=tracker.run_id, step=step)
        rows.append({"step": step, "val_loss": curve[step], "shapes_overall": result.overall})
        logging.info("%s step %d: val loss %.4f, ShapesEval %.3f", size, step, curve[step], result.overall)
    tracker.finish()
    return {"size": size, "num_params": num_params, "train_seconds": float(np.sum(timings)),
            "val_loss_curve": [{"step": k, "val_loss": v} for k, v in sorted(curve.items())], "checkpoints": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--sizes", default="64x2,128x4", help="comma-separated <embed_dim>x<depth>")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=100, help="export and ShapesEval every N steps")
    parser.add_argument("--val-every", type=int, default=50, help="the trainer's val loss every N steps (divides --every)")
    parser.add_argument("--val-batch", type=int, default=32, help="held-out images per validation batch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--val-images", type=int, default=64)
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    if args.every % args.val_every or args.val_images % args.val_batch:
        parser.error("--val-every must divide --every and --val-batch must divide --val-images")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    t0 = time.perf_counter()
    sizes = [train_size(work, uri, *map(int, s.split("x")), args) for s in args.sizes.split(",")]
    report = scaling_report(uri, [EXPERIMENT], work / "report")
    args.results.mkdir(parents=True, exist_ok=True)
    for name in ("curves", "correlation"):
        shutil.copy(report.files[name], args.results / f"scaling_demo_{name}.png")
    summary = {
        "command": "uv run python bench/scaling_demo.py WORK_DIR " + " ".join(sys.argv[2:] if argv is None else argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("work_dir", "results")},
        "sizes": sizes,
        "correlations": [{"metric": c.metric, "n": c.n, "r": c.r, "ci95": [c.ci_low, c.ci_high]} for c in report.correlations],
        "val_loss_sources": sorted({p.val_loss_source for p in report.data.points}),
        "total_seconds": time.perf_counter() - t0,
    }
    (args.results / "scaling_demo.json").write_text(json.dumps(summary, indent=2))
    logging.info("report: %s", report.files["html"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
