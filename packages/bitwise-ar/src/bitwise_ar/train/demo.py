"""The ShapesT2I demo recipe: tiny tokenizer, tiny word-level T5, tiny AR transformer, trained on 2 CPU cores.

``python -m bitwise_ar.train.demo tokenizer --out runs/demo_tok`` trains the tokenizer;
``python -m bitwise_ar.train.demo ...`` subcommands are thin wrappers over the library functions here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

from bitwise_ar.shapes import RenderConfig, ShapesConfig, ShapesT2I

logger = logging.getLogger(__name__)

#: Architecture of the demo tokenizer: stride 8 on 64x64 images -> an 8x8 latent of 16 bits, ~1M parameters.
DEMO_TOKENIZER = {
    "codebook_dim": 16,
    "base_channels": 32,
    "channel_multipliers": (1, 1, 2, 2),
    "num_res_blocks": 1,
    "patch_size": 8,
    "norm_groups": 8,
    "description": "ShapesT2I demo tokenizer (64x64 images, stride 8, d=16)",
}


def image_to_tensor(image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1).div(127.5).sub(1.0)


def shapes_batches(
    *, batch_size: int, seed: int = 0, image_size: int = 64, start: int = 0, with_captions: bool = False
) -> Iterator:
    """Endless ShapesT2I batches (images (B, 3, H, W) in [-1, 1], optionally with captions), sample ``start`` on."""
    dataset = ShapesT2I(length=2**62, seed=seed, config=ShapesConfig(render=RenderConfig(image_size=image_size)))
    index = start
    while True:
        samples = [dataset[index + j] for j in range(batch_size)]
        index += batch_size
        images = torch.stack([image_to_tensor(s.image) for s in samples])
        yield (images, [s.caption for s in samples]) if with_captions else images


def train_demo_tokenizer(out_dir: str, *, steps: int = 2000, batch_size: int = 16, lr: float = 1e-3, seed: int = 0):
    """Train the demo tokenizer on endless ShapesT2I images; returns the trained :class:`BSQTokenizer`."""
    from bsq_tokenizer.config import TokenizerConfig
    from bsq_tokenizer.train import TokenizerTrainConfig, TokenizerTrainer

    config = TokenizerTrainConfig(
        model=TokenizerConfig(**DEMO_TOKENIZER),
        steps=steps,
        lr=lr,
        warmup_steps=min(100, steps // 10),
        l1_weight=1.0,
        l2_weight=1.0,
        scale_drop_prob=0.5,
        seed=seed,
        log_every=50,
        checkpoint_every=200,
    )
    trainer = TokenizerTrainer(config, out_dir=out_dir)
    return trainer.fit(shapes_batches(batch_size=batch_size, seed=seed + 1000, start=trainer.step * batch_size))
