"""Teach the ShapesT2I demo model one new word with LoRA: "purple", a colour it has never seen.

The demo model's word-level text encoder has a fixed vocabulary (frozen here, like every part but the adapters), so
"purple" becomes ``<unk>`` (recorded in the results). What LoRA can teach is therefore "the unknown colour word means
purple": the adapters on the transformer's attention and FFN projections learn to draw purple where the text says
``<unk>``. The renderer and the ShapesEval scorer take any colour registered in the palette, so purple is added to
it for this run only (RGB below; far from the four trained colours and the background).

Steps: (1) the frozen tokenizer's ceiling: ShapesEval of the *reconstructions* of rendered purple scenes (the model
can never beat what the tokenizer can draw); (2) a few hundred ShapesT2I examples drawn with the five-colour palette
(about a third of them mention purple; the rest keep the old colours in use) written as an Infinity jsonl split;
(3) the base demo model scored on held-out prompts with and without purple; (4) a LoRA run (``lora.rank``, same
trainer, ``model.init_from`` = the demo model); (5) the same prompts with the adapter merged. Scores are ShapesEval
overall with 95% bootstrap CIs over prompts.

    python bench/lora_new_word.py [--examples 400] [--steps 300] [--output bench/results/lora_new_word.json]

Measured (docs/training.md): the frozen tokenizer cannot reconstruct purple (ceiling 0.0), so the model cannot learn
to draw it; the old colours stay within their confidence interval.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bitwise_ar.cli import DEMO_MODEL_DIR
from bitwise_ar.pipeline import InfinityPipeline
from bitwise_ar.train.config import load_config
from bitwise_ar.train.trainer import ARTrainer
from infinity_shapes import (
    COLORS,
    RenderConfig,
    ShapesConfig,
    ShapesT2I,
    aggregate,
    eval_prompts,
    parse_caption,
    score_image,
)
from infinity_shapes.dataset import write_split
from infinity_shapes.recipe import DEMO_CONFIG
from PIL import Image

NEW_WORD, NEW_RGB = "purple", (150, 50, 200)
RENDER = RenderConfig(image_size=64, ordered=True, rows=True)  # the demo model's data conventions


def mentions(spec, word: str = NEW_WORD) -> bool:
    return any(g.color == word for g in spec.groups)


def score(pipe: InfinityPipeline, specs, *, seed: int, batch: int = 16) -> dict:
    scores = []
    for start in range(0, len(specs), batch):
        chunk = specs[start : start + batch]
        out = pipe([s.caption for s in chunk], seed=seed + start)
        scores += [score_image(image, spec) for image, spec in zip(out.images, chunk, strict=True)]
    result = aggregate(scores)
    return {"overall": result.overall, "ci": [result.ci_low, result.ci_high], "per_check": result.per_check,
            "prompts": len(specs)}  # fmt: skip


@torch.no_grad()
def tokenizer_ceiling(pipe: InfinityPipeline, count: int, seed: int) -> dict:
    """ShapesEval of the frozen tokenizer's reconstructions of rendered scenes that mention the new word."""
    data = ShapesT2I(length=50 * count, seed=seed, config=ShapesConfig(render=RENDER))
    samples = []
    for i in range(len(data)):
        if mentions(data.spec(i)):
            samples.append(data[i])
        if len(samples) == count:
            break
    images = torch.stack([torch.from_numpy(np.asarray(s.image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1 for s in samples])
    recon = pipe.tokenizer.decode_features(pipe.tokenizer.encode_features(images)).clamp(-1, 1)
    arrays = ((recon + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    scores = [score_image(Image.fromarray(a), parse_caption(s.caption)) for a, s in zip(arrays, samples, strict=True)]
    result = aggregate(scores)
    return {"overall": result.overall, "ci": [result.ci_low, result.ci_high], "scenes": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=400, help="training images (all colours, ~1/3 mention purple)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--prompts", type=int, default=240, help="held-out evaluation prompts (split by the new word)")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "lora_new_word.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    COLORS[NEW_WORD] = NEW_RGB  # this process only: the renderer and the scorer read the palette at call time
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="lora-new-word-"))
    base = InfinityPipeline.from_pretrained(DEMO_MODEL_DIR)
    tokens = base.text_encoder.tokenizer(f"a {NEW_WORD} circle")["input_ids"]
    words = base.text_encoder.tokenizer.convert_ids_to_tokens(tokens)

    split = write_split(work / "data", length=args.examples, seed=7, config=ShapesConfig(render=RENDER))
    captions = [json.loads(line)["text"] for line in next(split.glob("*.jsonl")).read_text().splitlines()]
    with_word = sum(NEW_WORD in c for c in captions)

    specs = eval_prompts(args.prompts, seed=12345, config=ShapesConfig(render=RENDER))
    new_specs = [s for s in specs if mentions(s)]
    old_specs = [s for s in specs if not mentions(s)]
    t0 = time.perf_counter()
    before = {"new_word": score(base, new_specs, seed=1), "old_words": score(base, old_specs, seed=1)}
    ceiling = tokenizer_ceiling(base, 64, seed=99)

    config = load_config(DEMO_CONFIG, [
        f"model.init_from={DEMO_MODEL_DIR}", f"model.tokenizer={DEMO_MODEL_DIR / 'tokenizer'}",
        f"model.text_encoder={DEMO_MODEL_DIR / 'text_encoder'}", f"data.source={split}", "data.format=jsonl",
        f"data.batch_size={args.batch_size}", f"train.steps={args.steps}", f"optim.lr={args.lr}",
        "optim.warmup_steps=20", f"lora.rank={args.rank}", f"lora.alpha={2 * args.rank}",
        f"run.out_dir={work / 'run'}", "run.checkpoint_every=0", "run.log_every=50",
    ])  # fmt: skip
    train_start = time.perf_counter()
    trainer = ARTrainer(config, device="cpu")
    metrics = trainer.fit()
    train_s = time.perf_counter() - train_start
    tuned = InfinityPipeline.from_pretrained(DEMO_MODEL_DIR, lora=work / "run" / "lora").merge_lora()
    after = {"new_word": score(tuned, new_specs, seed=1), "old_words": score(tuned, old_specs, seed=1)}
    result = {
        "benchmark": "LoRA teaches the ShapesT2I demo model a new colour word",
        "new_word": NEW_WORD,
        "new_rgb": list(NEW_RGB),
        "prompt_tokens": words,
        "training_examples": args.examples,
        "training_examples_with_new_word": with_word,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lora_rank": args.rank,
        "adapter_params": sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" in n),
        "base_params": sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" not in n),
        "final_train_loss": metrics.get("train/loss"),
        "train_seconds": train_s,
        "tokenizer_ceiling_new_word": ceiling,
        "before": before,
        "after": after,
        "wall_seconds": time.perf_counter() - t0,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("prompt_tokens", "tokenizer_ceiling_new_word", "before", "after")}, indent=2))


if __name__ == "__main__":
    main()
