"""The ShapesT2I demo recipe: tiny tokenizer, tiny word-level T5, tiny AR transformer, trained on 2 CPU cores.

Stages (each a library function; ``python -m infinity_shapes.recipe <work_dir>`` runs them all, resuming finished
or interrupted stages): :func:`train_demo_tokenizer` -> :func:`build_demo_text_encoder` -> :func:`train_demo_ar`
(:data:`DEMO_CONFIG`, ``infinity_shapes/configs/shapes_demo.toml``, shipped in the wheel) -> :func:`export_pipeline`
(the ``InfinityPipeline.from_pretrained`` layout of ``bitwise_ar/demo_model``) -> :func:`evaluate_pipeline`
(ShapesEval with a bootstrap CI). Training needs the ``train`` extra (``pip install 'infinity-shapes[train]'``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from bitwise_ar.pipeline import InfinityPipeline, PipelineDefaults
from bitwise_ar.sampling import SamplingConfig
from bitwise_ar.text_encoder import build_tiny_t5, require_transformers
from bitwise_ar.train.config import load_config
from bitwise_ar.train.sources import image_to_tensor
from bitwise_ar.train.trainer import ARTrainer
from bsq_tokenizer.config import TokenizerConfig
from bsq_tokenizer.train import TokenizerTrainConfig, TokenizerTrainer
from tqdm.auto import tqdm

from infinity_shapes import (
    RenderConfig,
    ShapesConfig,
    ShapesT2I,
    aggregate,
    caption_words,
    eval_prompts,
    render,
    sample_prompt,
    score_image,
)
from infinity_shapes.spec import COLORS, NUMBER_WORDS, RELATIONS, SHAPES

logger = logging.getLogger(__name__)

#: The demo AR run config, package data of this package (a real file in an installed wheel or a checkout).
DEMO_CONFIG = Path(str(files("infinity_shapes") / "configs" / "shapes_demo.toml"))

#: Architecture of the demo tokenizer: stride 8 on 64x64 images -> an 8x8 latent of 16 bits, 0.73M parameters,
#: 0.47 GFLOP per image (encoder + decoder).
DEMO_TOKENIZER = {
    "codebook_dim": 16,
    "base_channels": 16,
    "channel_multipliers": (1, 2, 2, 4),
    "num_res_blocks": 1,
    "patch_size": 8,
    "norm_groups": 8,
    "description": "ShapesT2I demo tokenizer (64x64 images, stride 8, d=16)",
}


#: Steps of the demo tokenizer recipe (batch 16; about 6 minutes on 2 CPU cores). Its reconstructions of the
#: 240 standard prompts' row-layout scenes score about 0.99 (2000 steps: 0.996).
DEMO_TOKENIZER_STEPS = 1200


def shapes_batches(
    *, batch_size: int, seed: int = 0, image_size: int = 64, start: int = 0, with_captions: bool = False, grid: int = 0
) -> Iterator:
    """Endless ShapesT2I batches (images (B, 3, H, W) in [-1, 1], optionally with captions), sample ``start`` on."""
    render = RenderConfig(image_size=image_size, grid=grid)
    dataset = ShapesT2I(length=2**62, seed=seed, config=ShapesConfig(render=render))
    index = start
    while True:
        samples = [dataset[index + j] for j in range(batch_size)]
        index += batch_size
        images = torch.stack([image_to_tensor(s.image) for s in samples])
        yield (images, [s.caption for s in samples]) if with_captions else images


def train_demo_tokenizer(
    out_dir: str, *, steps: int = DEMO_TOKENIZER_STEPS, batch_size: int = 16, lr: float = 2e-3, seed: int = 0, codebook_dim: int = 16
):
    """Train the demo tokenizer on endless ShapesT2I images; returns the trained :class:`BSQTokenizer`."""
    config = TokenizerTrainConfig(
        model=TokenizerConfig(**{**DEMO_TOKENIZER, "codebook_dim": codebook_dim}),
        steps=steps,
        lr=lr,
        warmup_steps=min(100, steps // 10),
        l1_weight=1.0,
        l2_weight=1.0,
        scale_drop_prob=0.5,
        seed=seed,
        log_every=25,
        checkpoint_every=100,
    )
    trainer = TokenizerTrainer(config, out_dir=out_dir)
    return trainer.fit(shapes_batches(batch_size=batch_size, seed=seed + 1000, start=trainer.step * batch_size))


def build_demo_text_encoder(out_dir: str, *, pretrain_steps: int = 800, seed: int = 0) -> str:
    """The tiny word-level T5 over the ShapesT2I vocabulary (d_model 32), built offline, then taught the caption
    grammar with :func:`pretrain_caption_encoder` (``pretrain_steps = 0`` keeps it random). Finished stages are kept."""
    if not (Path(out_dir) / "config.json").is_file():
        build_tiny_t5(out_dir, caption_words(), d_model=32, num_layers=2, num_heads=4, d_ff=64, seed=seed)
    if pretrain_steps and not (Path(out_dir) / _PRETRAIN_RECORD).is_file():
        pretrain_caption_encoder(out_dir, steps=pretrain_steps, seed=seed)
    return out_dir


_PRETRAIN_RECORD = "caption_pretraining.json"


def caption_slots(spec) -> list[int]:
    """The targets of :func:`pretrain_caption_encoder` for one prompt spec: colour, shape and count of each group
    (0 = no second group) and the relation (0 = none), in caption order."""

    colors, shapes, slots = list(COLORS), list(SHAPES), []
    for i in range(2):
        if i < len(spec.groups):
            g = spec.groups[i]
            slots += [colors.index(g.color) + 1, shapes.index(g.shape) + 1, g.count]
        else:
            slots += [0, 0, 0]
    slots.append(0 if spec.relation is None else RELATIONS.index(spec.relation) + 1)
    return slots


def pretrain_caption_encoder(
    directory: str, *, steps: int = 800, batch_size: int = 128, lr: float = 3e-3, seed: int = 0
) -> dict:
    """Teach a tiny T5 encoder (saved in ``directory``, overwritten) the ShapesT2I caption grammar.

    A random T5 is nearly a bag of words: its features for "a yellow square and a green circle" and "a green square
    and a yellow circle" have a pooled cosine similarity of 0.9995, so no text-conditioned model can tell which colour
    goes with which shape or which object is on the left. Pretrained T5s know word order; this stands in for that
    pretraining: linear heads on the mean-pooled features predict every slot of the caption (:func:`caption_slots`),
    which forces the encoder to mix context into its token features. Returns (and records in
    ``caption_pretraining.json``) the final slot accuracy on fresh captions.
    """
    transformers = require_transformers()
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    rng = np.random.default_rng(seed + 7)

    def batch(model, heads, n: int):
        specs = [sample_prompt(rng) for _ in range(n)]
        enc = tokenizer([s.caption for s in specs], padding="longest", return_tensors="pt")
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        logits = [head(pooled) for head in heads]
        return logits, torch.tensor([caption_slots(s) for s in specs])

    with torch.random.fork_rng(devices=[]):  # seeded (init and dropout) and leaves the caller's RNG untouched
        torch.manual_seed(seed)
        model = transformers.T5EncoderModel.from_pretrained(directory, local_files_only=True).train()
        sizes = [len(COLORS) + 1, len(SHAPES) + 1, len(NUMBER_WORDS) + 1] * 2 + [len(RELATIONS) + 1]
        heads = torch.nn.ModuleList(torch.nn.Linear(model.config.d_model, n) for n in sizes)
        optimizer = torch.optim.AdamW([*model.parameters(), *heads.parameters()], lr=lr, weight_decay=0.0)
        for step in tqdm(range(steps), desc="caption pretraining"):
            for group in optimizer.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + np.cos(np.pi * step / steps))
            logits, targets = batch(model, heads, batch_size)
            loss = sum(torch.nn.functional.cross_entropy(lg, targets[:, i]) for i, lg in enumerate(logits))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        logits, targets = batch(model, heads, 1024)
        correct = torch.stack([lg.argmax(-1) == targets[:, i] for i, lg in enumerate(logits)], dim=1)
    record = {
        "steps": steps,
        "slot_accuracy": float(correct.float().mean()),
        "caption_accuracy": float(correct.all(1).float().mean()),
    }
    model.save_pretrained(directory)
    (Path(directory) / _PRETRAIN_RECORD).write_text(json.dumps(record, indent=2))
    logger.info("caption pretraining: %s", record)
    return record


def train_demo_ar(
    out_dir: str,
    tokenizer_dir: str,
    text_encoder_dir: str,
    *,
    config_path: str | None = None,
    overrides: list[str] | None = None,
):
    """Train the demo AR transformer with :data:`DEMO_CONFIG` (or ``config_path``); returns the :class:`ARTrainer`."""
    config = load_config(
        config_path or DEMO_CONFIG,
        [
            f"run.out_dir={out_dir}",
            f"model.tokenizer={tokenizer_dir}",
            f"model.text_encoder={text_encoder_dir}",
            *(overrides or []),
        ],
    )
    trainer = ARTrainer(config)
    trainer.fit()
    return trainer


def demo_temperatures(num_scales: int) -> list[float]:
    """The demo's per-scale sampling temperature: 1.5 on the two coarsest scales, 1.0 on the third, 0.5 after.

    At 0.5 the uncertain coarse scales of open-layout prompts ("a red circle and a blue square") collapse toward the
    per-bit majority, often one object in the centre; a higher temperature there lets the model commit to a layout
    (docs/training.md, "Sampling").
    """
    return [1.5, 1.5, 1.0, *([0.5] * max(0, num_scales - 3))][:num_scales]


def export_pipeline(
    trainer, out_dir: str, *, cfg: float = 2.0, tau: float | list[float] | None = None, image_size: int = 64
) -> str:
    """Write an ``InfinityPipeline`` directory (transformer/, tokenizer/, text_encoder/, pipeline.json).

    ``tau`` defaults to :func:`demo_temperatures` for the schedule at ``image_size``. ``cfg`` 2 beat 3 on the demo
    model on every prompt set tried (0.818 vs 0.799 over 1200 prompts; docs/training.md, "Sampling").
    """
    size = (image_size, image_size)
    pipe = InfinityPipeline(trainer.model.eval(), trainer.tokenizer, trainer.text_encoder.encoder, PipelineDefaults())
    if tau is None:
        tau = demo_temperatures(len(pipe.layout_for(image_size=size).schedule))
    pipe.defaults = PipelineDefaults(sampling=SamplingConfig(cfg=cfg, tau=tau), image_size=size)
    pipe.save_pretrained(out_dir, text_encoder_dir=trainer.config.model.text_encoder)
    return out_dir


def evaluate_pipeline(
    pipeline_dir: str,
    *,
    num_prompts: int = 240,
    batch_size: int = 24,
    seed: int = 0,
    sampling=None,
    prompt_seed: int = 12345,
    device: torch.device | str = "cpu",
):
    """ShapesEval over :func:`infinity_shapes.eval_prompts`; returns ``(result, images, specs)``. Randomness comes
    from CPU generators (seed ``seed + first prompt index`` per batch), so another ``device`` draws the same numbers."""
    pipe = InfinityPipeline.from_pretrained(pipeline_dir, device=device)
    specs = eval_prompts(num_prompts, seed=prompt_seed)
    images = []
    for start in range(0, len(specs), batch_size):
        chunk = specs[start : start + batch_size]
        out = pipe(
            [s.caption for s in chunk], sampling=sampling, seed=seed + start, image_size=pipe.defaults.image_size
        )
        images.extend(out.images)
    scores = [score_image(image, spec) for image, spec in zip(images, specs, strict=True)]
    return aggregate(scores), images, specs


def prefix_curve(
    pipeline_dir: str, *, num_prompts: int = 96, seed: int = 0, prompt_seed: int = 12345, grid: int = 0
) -> list[dict]:
    """Where a model goes wrong, scale by scale: ShapesEval when the first K scales are the tokenizer's bits of a
    ground-truth rendering of each prompt and the model samples the rest, for K = 0 (plain generation) .. all scales
    (the tokenizer's reconstruction ceiling); ``grid`` is the ground truth's :attr:`RenderConfig.grid`. Returns one
    ``{"given_scales": K, **ShapesEval}`` per K."""
    pipe = InfinityPipeline.from_pretrained(pipeline_dir)
    size = pipe.defaults.image_size
    if size is None or size[0] != size[1]:
        raise ValueError(
            f"{pipeline_dir}: prefix_curve needs a square ShapesT2I pipeline (defaults.image_size), got {size}"
        )
    specs = eval_prompts(num_prompts, seed=prompt_seed)
    rng = np.random.default_rng(seed)
    truth = torch.stack(
        [image_to_tensor(render(s, RenderConfig(image_size=size[0], grid=grid), rng)[0]) for s in specs]
    )
    layout = pipe.layout_for(image_size=size)
    latent = [(2 * h, 2 * w) for h, w in layout.schedule] if pipe.tokenizer.config.spatial_patchify else layout.schedule
    with torch.inference_mode():
        given = pipe.tokenizer.encode(truth, schedule=latent).transformer_bits()
    captions = [s.caption for s in specs]
    curve = []
    for k in range(len(given) + 1):
        out = pipe(captions, image_size=size, seed=seed, prefix_bits=given[:k])
        result = aggregate([score_image(image, spec) for image, spec in zip(out.images, specs, strict=True)])
        curve.append({"given_scales": k, **result.as_dict()})
        logger.info("prefix_curve: %d ground-truth scales -> ShapesEval %.3f", k, result.overall)
    return curve


def main(argv: list[str] | None = None) -> int:
    """``python -m infinity_shapes.recipe WORK_DIR [--tokenizer-steps N] [--export DIR] [--eval-prompts N] [ar overrides...]``."""
    parser = argparse.ArgumentParser(prog="python -m infinity_shapes.recipe", description=__doc__.splitlines()[0])
    parser.add_argument("work_dir")
    parser.add_argument(
        "--tokenizer-steps", type=int, default=DEMO_TOKENIZER_STEPS, help=f"default {DEMO_TOKENIZER_STEPS}, the committed recipe"
    )
    parser.add_argument("--export", default="", help="pipeline directory to write (default WORK_DIR/pipeline)")
    parser.add_argument("--eval-prompts", type=int, default=240)
    parser.add_argument("overrides", nargs="*", help="dotted overrides for the AR config, e.g. train.steps=2000")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    work = Path(args.work_dir)
    tok_dir = work / "tokenizer_run"
    if not (tok_dir / "tokenizer" / "config.json").is_file():
        train_demo_tokenizer(str(tok_dir), steps=args.tokenizer_steps)
    t5 = build_demo_text_encoder(str(work / "text_encoder"))
    trainer = train_demo_ar(str(work / "ar_run"), str(tok_dir / "tokenizer"), t5, overrides=args.overrides)
    out = export_pipeline(trainer, args.export or str(work / "pipeline"))
    result, _, _ = evaluate_pipeline(out, num_prompts=args.eval_prompts)
    (work / "shapes_eval.json").write_text(json.dumps(result.as_dict(), indent=2))
    logger.info("ShapesEval %s", result.as_dict())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
