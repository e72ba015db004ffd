"""Teach the ShapesT2I demo model one new word with LoRA: "semicircle", a shape it has never seen.

The demo model's word-level text encoder has a fixed vocabulary with no free slots (its embedding has exactly one row
per known word; it stays frozen here, like every part but the adapters), so "semicircle" and "semicircles" become
``<unk>`` (recorded in the results). What LoRA can teach is therefore "the unknown shape word means a semicircle":
the adapters on the transformer's attention and FFN projections learn to draw a semicircle where the text says
``<unk>``. The renderer, the prompt sampler, the caption parser and the scorer take any shape in the vocabulary, so
the semicircle (``infinity_shapes.SEMICIRCLE``) is added to it for this run only (``extended_vocabulary``).

An earlier version of this script tried the colour "purple" and could not work: the frozen BSQ tokenizer cannot
reconstruct purple at all. A new shape in the old colours can be reconstructed; among those tried the semicircle
comes back best (a diamond or a ring is rounded into a circle); step (1) measures it.

Steps: (1) the frozen tokenizer's ceiling: ShapesEval of the *reconstructions* of rendered scenes with the new shape
(the model can never beat what the tokenizer can draw), and which shape the scorer calls each drawn object on the
rendered scenes and on their reconstructions; (2) a few hundred ShapesT2I examples drawn with the extended vocabulary
(about a third of them mention the new shape; the rest keep the old words in use) written as an Infinity jsonl
split; (3) the base demo model scored on held-out prompts with the new word and on the 240 standard ShapesEval
prompts (old words only); (4) a LoRA run (``lora.rank``, the same trainer, ``model.init_from`` = the demo model);
(5) the same prompts with the adapter merged. Scores are ShapesEval overall with 95% bootstrap CIs over prompts, all
graded by the scorer that knows the new shape.

    python bench/lora_new_word.py [--examples 400] [--steps 600] [--output bench/results/lora_new_word.json]
    python bench/lora_new_word.py --tiny --output /tmp/tiny.json   # seconds, what the test runs

Measured: see docs/training.md ("A new word for the demo model").
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from bitwise_ar.cli import DEMO_MODEL_DIR
from bitwise_ar.pipeline import InfinityPipeline
from bitwise_ar.train.config import load_config
from bitwise_ar.train.trainer import ARTrainer
from infinity_shapes import (
    SEMICIRCLE,
    RenderConfig,
    ShapesConfig,
    ShapesT2I,
    aggregate,
    eval_prompts,
    extended_vocabulary,
    score_image,
)
from infinity_shapes.dataset import write_split
from infinity_shapes.recipe import DEMO_CONFIG
from PIL import Image

NEW = SEMICIRCLE
RENDER = RenderConfig(image_size=64, ordered=True, rows=True)  # the demo model's data conventions
TINY = ["--examples", "6", "--steps", "1", "--batch-size", "2", "--rank", "2", "--new-prompts", "6",
        "--old-prompts", "6", "--ceiling-scenes", "4"]  # fmt: skip


def mentions(spec, word: str = NEW.name) -> bool:
    return any(g.shape == word for g in spec.groups)


def generate(pipe: InfinityPipeline, specs, *, seed: int, batch: int = 16) -> list[Image.Image]:
    images = []
    for start in range(0, len(specs), batch):
        images += pipe([s.caption for s in specs[start : start + batch]], seed=seed + start).images
    return images


def grade(images: Sequence[Image.Image], specs) -> dict:
    """ShapesEval with the vocabulary in force when called."""
    result = aggregate([score_image(image, spec) for image, spec in zip(images, specs, strict=True)])
    return {"overall": result.overall, "ci": [result.ci_low, result.ci_high], "per_check": result.per_check,
            "prompts": len(specs)}  # fmt: skip


def _called(samples, scores) -> collections.Counter:
    """(drawn shape, shape the scorer called the detection nearest to it) over every drawn object."""
    calls = collections.Counter()
    for sample, result in zip(samples, scores, strict=True):
        for p in sample.placements:
            near = min(result.detections, key=lambda d: (d.cx - p.cx) ** 2 + (d.cy - p.cy) ** 2, default=None)
            calls[(p.shape, near.shape if near else "nothing")] += 1
    return calls


@torch.no_grad()
def tokenizer_ceiling(pipe: InfinityPipeline, count: int, seed: int) -> dict:
    """ShapesEval of rendered scenes that mention the new word and of the frozen tokenizer's reconstructions of them,
    with how the scorer calls each drawn object (``"drawn -> called": n``) in both."""
    data = ShapesT2I(length=50 * count, seed=seed, config=ShapesConfig(render=RENDER))
    samples = [data[i] for i in range(len(data)) if mentions(data.spec(i))][:count]
    images = torch.stack([torch.from_numpy(np.asarray(s.image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1 for s in samples])
    recon = pipe.tokenizer.decode_features(pipe.tokenizer.encode_features(images)).clamp(-1, 1)
    arrays = ((recon + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = {"scenes": len(samples)}
    for name, pictures in (("rendered", [s.image for s in samples]), ("reconstructed", [Image.fromarray(a) for a in arrays])):
        scores = [score_image(p, s.spec) for p, s in zip(pictures, samples, strict=True)]
        result = aggregate(scores)
        calls = _called(samples, scores)
        out[name] = {"overall": result.overall, "ci": [result.ci_low, result.ci_high],
                     "called": {f"{a} -> {b}": n for (a, b), n in sorted(calls.items())}}  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=400, help="training images (~1/3 mention the new shape)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--new-prompts", type=int, default=300,
                        help="held-out prompts drawn with the new shape in the vocabulary; those that mention it are kept")  # fmt: skip
    parser.add_argument("--old-prompts", type=int, default=240, help="standard ShapesEval prompts (old words only)")
    parser.add_argument("--ceiling-scenes", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; on a shared 2-core machine 2 threads made a LoRA step 10x slower than 1")  # fmt: skip
    parser.add_argument("--tiny", action="store_true", help="a few examples, one step (seconds; what the test runs)")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "lora_new_word.json"))
    args = parser.parse_args(argv)
    if args.tiny:
        args = parser.parse_args([*TINY, *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="lora-new-word-"))
    old_specs = eval_prompts(args.old_prompts, seed=12345, config=ShapesConfig(render=RENDER))  # the demo's vocabulary
    with extended_vocabulary(shapes=[NEW]):
        result, old_images = run(args, work, old_specs)
    for when in ("before", "after"):  # the old prompts' images graded again by the demo's own scorer
        result[when]["old_words_demo_scorer"] = grade(old_images[when], old_specs)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("prompt_tokens", "tokenizer_ceiling", "before", "after")}, indent=2))
    return 0


def run(args: argparse.Namespace, work: Path, old_specs) -> tuple[dict, dict[str, list[Image.Image]]]:
    """Every step but the last grading; returns the results and the old prompts' images before and after."""
    t0 = time.perf_counter()
    base = InfinityPipeline.from_pretrained(DEMO_MODEL_DIR)
    text_tokenizer = base.text_encoder.tokenizer
    words = text_tokenizer.convert_ids_to_tokens(text_tokenizer(f"a red {NEW.name} and two blue {NEW.name}s")["input_ids"])
    ceiling = tokenizer_ceiling(base, args.ceiling_scenes, seed=99)

    split = write_split(work / "data", length=args.examples, seed=7, config=ShapesConfig(render=RENDER))
    captions = [json.loads(line)["text"] for line in next(split.glob("*.jsonl")).read_text().splitlines()]
    with_word = sum(NEW.name in c for c in captions)

    new_specs = [s for s in eval_prompts(args.new_prompts, seed=12345, config=ShapesConfig(render=RENDER)) if mentions(s)]
    images = {"before": (generate(base, new_specs, seed=1), generate(base, old_specs, seed=1))}
    before = {"new_word": grade(images["before"][0], new_specs), "old_words": grade(images["before"][1], old_specs)}
    logging.info("before: %s", json.dumps({k: v["overall"] for k, v in before.items()}))

    config = load_config(DEMO_CONFIG, [
        f"model.init_from={DEMO_MODEL_DIR}", f"model.tokenizer={DEMO_MODEL_DIR / 'tokenizer'}",
        f"model.text_encoder={DEMO_MODEL_DIR / 'text_encoder'}", f"data.source={split}", "data.format=jsonl",
        f"data.batch_size={args.batch_size}", f"train.steps={args.steps}", f"optim.lr={args.lr}",
        f"optim.warmup_steps={min(20, args.steps)}", f"lora.rank={args.rank}", f"lora.alpha={2 * args.rank}",
        f"run.out_dir={work / 'run'}", "run.checkpoint_every=0", "run.log_every=25",
        "data.options={}",  # the renderer conventions are already in the written images
    ])  # fmt: skip
    train_start = time.perf_counter()
    trainer = ARTrainer(config, device="cpu")
    metrics = trainer.fit()
    train_s = time.perf_counter() - train_start
    tuned = InfinityPipeline.from_pretrained(DEMO_MODEL_DIR, lora=work / "run" / "lora").merge_lora()
    images["after"] = (generate(tuned, new_specs, seed=1), generate(tuned, old_specs, seed=1))
    after = {"new_word": grade(images["after"][0], new_specs), "old_words": grade(images["after"][1], old_specs)}
    logging.info("after: %s", json.dumps({k: v["overall"] for k, v in after.items()}))
    text_vocabulary = text_tokenizer.get_vocab()
    result = {
        "benchmark": "LoRA teaches the ShapesT2I demo model a new shape word",
        "new_word": NEW.name,
        "prompt_tokens": words,
        "unknown_words": base.text_encoder.unknown_words([f"two blue {NEW.name}s and a red {NEW.name}"])[0],
        "text_vocabulary": len(text_vocabulary),
        "text_embedding_rows": base.text_encoder.model.config.vocab_size,
        "training_examples": args.examples,
        "training_examples_with_new_word": with_word,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lora_rank": args.rank,
        "threads": args.threads,
        "adapter_params": sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" in n),
        "base_params": sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" not in n),
        "final_train_loss": metrics.get("train/loss"),
        "train_seconds": train_s,
        "tokenizer_ceiling": ceiling,
        "before": before,
        "after": after,
        "wall_seconds": time.perf_counter() - t0,
    }
    return result, {when: old for when, (_, old) in images.items()}


if __name__ == "__main__":
    raise SystemExit(main())
