"""``infinity-eval``: run suites, score image folders, FID between folders, list/verify weights.

Thin: parse, build a config, call one library function, print one line per result, exit non-zero with one line on
stderr for bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from infinity_run.config import parse_value, read_toml
from infinity_run.entry import parse_with_overrides

if TYPE_CHECKING:
    from infinity_eval.suites import RunConfig

logger = logging.getLogger("infinity_eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infinity-eval", description="Evaluate text-to-image models (FID, GenEval, "
                                     "ImageReward, HPSv2.1, CLIP score, validation loss).")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="generate (or take existing images) and score a suite")
    run.add_argument("--config", type=Path, help="TOML run config (configs/eval/*.toml); CLI flags override it")
    run.add_argument("--suite", help="geneval, imagereward, hpsv21, infinity-paper, shapes-demo, or a suite TOML")
    run.add_argument("--model", help="bitwise-ar pipeline folder or module:factory adapter")
    run.add_argument("--score-only", type=Path, help="score existing images in this folder instead of generating")
    run.add_argument("--out", type=Path, help="output folder (images, score caches, results.json)")
    run.add_argument("--weights-root", type=Path, help="folder with the metric weights (see `infinity-eval weights`)")
    run.add_argument("--workers", type=int, help="Ray Data scoring actors (0 = in-process)")
    run.add_argument("--limit", type=int, help="only the first N prompts of each benchmark (smoke runs; tagged incomplete)")
    run.add_argument("--allow-incomplete", action="store_true", help="score even if images or prompts are missing")
    run.add_argument("--mlflow-uri", help="log to MLflow at this URI (= tracking.kind=mlflow tracking.tracking_uri=URI)")
    run.add_argument("--experiment", help="log to MLflow in this experiment (= tracking.kind=mlflow tracking.experiment=X)")
    run.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE",
                     help="dotted overrides of the run config, e.g. run.seed=3 generation.sampling.cfg=4 "
                     "weights.clip=/path (as in every project CLI)")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="one more override (the same as a positional one)")

    fid = sub.add_parser("fid", help="FID/KID between two image folders (or a folder and a stats .npz)")
    fid.add_argument("pred", type=Path)
    fid.add_argument("reference", type=Path)
    fid.add_argument("--weights", type=Path, required=True, help="pt_inception-2015-12-05-6726825d.pth")
    fid.add_argument("--mode", default="clean", help="clean (default), legacy_pytorch or legacy_tensorflow")
    fid.add_argument("--batch-size", type=int, default=32)

    weights = sub.add_parser("weights", help="list the weights each metric needs and verify local copies")
    weights.add_argument("--root", type=Path, default=Path("~/.cache/infinity-eval/weights"))
    weights.add_argument("--metric", action="append", help="only this metric (repeatable)")
    weights.add_argument("--pin", action="store_true", help="record the sha256 of present files in weights.lock.json")
    weights.add_argument("--json", action="store_true", help="machine-readable output")

    val = sub.add_parser("val-loss", help="validation loss of a bitwise-ar pipeline on held-out data (the trainer's "
                         "[val] computation)")
    val.add_argument("model", type=Path)
    val.add_argument("split", help="a jsonl file, or a training data source as in [val]: a split folder, webdataset "
                     "shards, or a named source (synthetic, shapes)")
    val.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="required for a jsonl file")
    val.add_argument("--batch-size", type=int, default=8)
    val.add_argument("--batches", type=int, help="read only the first N batches (required for a data source)")
    val.add_argument("--data-seed", type=int, default=1, help="a data source's seed (val.seed; default %(default)s)")
    val.add_argument("--format", default="auto", help="a data source's format (val.format)")
    val.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                     help="a named source's option (val.options.KEY=VALUE, repeatable)")
    val.add_argument("--bsc-max-flip", type=float, default=0.0)
    val.add_argument("--seed", type=int, default=0, help="seed of the Bitwise Self-Correction flips")

    scaling = sub.add_parser("scaling", help="scaling report: validation loss vs steps/FLOPs, Pearson r with metrics")
    scaling.add_argument("--mlflow-uri", required=True, help="MLflow tracking URI holding the runs")
    scaling.add_argument("--experiment", action="append", required=True, help="experiment to read (repeatable)")
    scaling.add_argument("--out", type=Path, required=True, help="folder for the PNGs, HTML and JSON")
    scaling.add_argument("--loss-key", default="val_loss/bit_ce", help="validation-loss metric (default %(default)s)")
    scaling.add_argument("--metric", action="append", help="correlate only these metrics (default: all)")
    scaling.add_argument("--confidence", type=float, default=0.95)
    scaling.add_argument("--log-experiment", help="log the report here (default: the first --experiment; '' = no)")

    link = sub.add_parser("scaling-link", help="tag an MLflow run for the scaling report (training or eval run)")
    link.add_argument("run_id")
    link.add_argument("--mlflow-uri", required=True)
    link.add_argument("--size", help="training run: model-size label")
    link.add_argument("--num-params", type=float, help="training run: parameter count")
    link.add_argument("--flops-per-step", type=float, help="training run: training FLOPs per optimiser step")
    link.add_argument("--train-run", help="eval run: the training run of the evaluated checkpoint")
    link.add_argument("--step", type=int, help="eval run: the checkpoint's training step")

    fetch = sub.add_parser("fetch-dpg", help="download DPG-Bench's question graph once (ELLA's dpg_bench.csv), "
                           "validate it, and print the path for weights.dpg_questions")
    fetch.add_argument("out", type=Path, help="where to write the CSV (e.g. <weights root>/dpg_bench.csv)")
    fetch.add_argument("--url", help="another copy of the file (default: ELLA's raw GitHub file at the pinned commit)")
    fetch.add_argument("--force", action="store_true", help="download again even if OUT exists")

    convert = sub.add_parser("convert-geneval-detector",
                             help="convert GenEval's mmdet Mask2Former checkpoint into a transformers folder")
    convert.add_argument("checkpoint", type=Path, help="mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_*.pth")
    convert.add_argument("out", type=Path, help="output folder (the weights.geneval_detector folder)")
    return parser


def _run_config(args: argparse.Namespace) -> RunConfig:
    """The config file, then the flags, then the ``--set`` overrides (:mod:`infinity_run.config` syntax)."""
    from infinity_eval.suites import build_run_config

    data: dict = read_toml(args.config) if args.config else {}
    run = dict(data.get("run", {}))
    flags = {"suite": args.suite, "model": args.model, "score_only": args.score_only, "out": args.out,
             "workers": args.workers, "limit": args.limit}
    run.update({k: str(v) if isinstance(v, Path) else v for k, v in flags.items() if v is not None})
    if args.allow_incomplete:
        run["allow_incomplete"] = True
    data = {**data, "run": run}
    if args.weights_root:
        data["weights"] = {**data.get("weights", {}), "root": str(args.weights_root)}
    if args.mlflow_uri or args.experiment:
        tracking = {**data.get("tracking", {}), "kind": "mlflow"}
        if args.mlflow_uri:
            tracking["tracking_uri"] = args.mlflow_uri
        if args.experiment:
            tracking["experiment"] = args.experiment
        data["tracking"] = tracking
    return build_run_config(data, [*args.overrides, *args.set], source=str(args.config) if args.config else "flags")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = parse_with_overrides(build_parser(), argv, takes_overrides=lambda a: a.command == "run")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            from infinity_eval.runner import run_suite

            result = run_suite(_run_config(args))
            for key, value in sorted(result.flat_metrics().items()):
                print(f"{key}\t{value:.6g}")
            print(f"results\t{result.out / 'results.json'}")
        elif args.command == "fid":
            from infinity_eval.fid import compute_fid

            res = compute_fid(args.pred, args.reference, weights=args.weights, mode=args.mode, batch_size=args.batch_size)
            for key, value in res.metrics().items():
                print(f"{key}\t{value:.6g}")
        elif args.command == "weights":
            from infinity_eval.scorers import WeightsConfig
            from infinity_eval.weights import verify

            report = verify(WeightsConfig(root=args.root), args.metric, pin=args.pin)
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                for row in report:
                    print(f"{row['status']:<9} {row['name']:<17} {row['path']}\n          metrics: {', '.join(row['metrics'])}; "
                          f"source: {row['source']}")
            if any(r["status"] in ("missing", "mismatch") for r in report):
                return 1
        elif args.command == "val-loss":
            from infinity_eval.val_loss import bitwise_ar_validation_loss

            metrics = bitwise_ar_validation_loss(
                args.model, args.split, image_size=tuple(args.image_size) if args.image_size else None,
                batch_size=args.batch_size, batches=args.batches, data_seed=args.data_seed, format=args.format,
                options=_options(args.option), bsc_max_flip=args.bsc_max_flip, seed=args.seed,
            )
            for key, value in metrics.items():
                print(f"{key}\t{value:.6g}")
        elif args.command == "scaling":
            from infinity_eval.scaling import scaling_report

            report = scaling_report(args.mlflow_uri, args.experiment, args.out, loss_key=args.loss_key,
                                    metrics=args.metric, confidence=args.confidence, log_experiment=args.log_experiment)
            for corr in report.correlations:
                print(f"pearson/{corr.metric}\t{corr.r:.4f}\t[{corr.ci_low:.4f}, {corr.ci_high:.4f}]\tn={corr.n}")
            print(f"report\t{report.files['html']}")
        elif args.command == "scaling-link":
            from infinity_eval.scaling import tag_eval_run, tag_training_run

            if (args.size is None) == (args.train_run is None):
                raise ValueError("give --size (a training run) or --train-run with --step (an eval run)")
            if args.size is not None:
                tag_training_run(args.mlflow_uri, args.run_id, size=args.size, num_params=args.num_params,
                                 flops_per_step=args.flops_per_step)
            elif args.step is None:
                raise ValueError("an eval run needs --step (the checkpoint's training step)")
            else:
                tag_eval_run(args.mlflow_uri, args.run_id, train_run_id=args.train_run, step=args.step)
        elif args.command == "fetch-dpg":
            from infinity_eval.dpg import DEFAULT_QUESTIONS_URL, fetch_questions

            fetched = fetch_questions(args.out, url=args.url or DEFAULT_QUESTIONS_URL, force=args.force)
            print(f"{'downloaded' if fetched.downloaded else 'present'}\t{fetched.prompts} prompts, {fetched.questions} "
                  f"questions, sha256 {fetched.sha256}")
            print(f"dpg_questions\t{fetched.path.resolve()}")
        elif args.command == "convert-geneval-detector":
            from infinity_eval.geneval.prompts import object_names
            from infinity_eval.geneval_convert import convert_checkpoint

            out = convert_checkpoint(args.checkpoint, args.out, id2label=dict(enumerate(object_names())))
            print(f"converted\t{out}")
    except Exception as exc:  # one line, no traceback (unless -v): the message names the file or setting to fix
        if args.verbose:
            logger.exception("infinity-eval %s failed", args.command)
        print(f"infinity-eval: error: {_describe(exc)}", file=sys.stderr)
        return 2
    return 0


def _options(items: Sequence[str]) -> dict:
    """``KEY=VALUE`` items as a dict, the values parsed as in every project override (``rows=true`` -> True)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {item!r} is not KEY=VALUE")
        out[key] = parse_value(value)
    return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        message = f"{exc.filename}: {exc.strerror or type(exc).__name__}"
    elif isinstance(exc, ValueError | FileNotFoundError | ImportError):
        message = str(exc)
    elif isinstance(exc, KeyError):
        message = f"missing key {exc}"
    else:
        message = f"{type(exc).__name__}: {exc} (run with -v for the traceback)"
    return " ".join(message.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
