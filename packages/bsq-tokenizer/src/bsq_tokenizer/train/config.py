"""Run configuration of tokenizer training: TOML sections with dotted overrides, as every Infinity run.

>>> cfg = load_run_config("configs/train/tokenizer_debug.toml", ["train.steps=10"])  # doctest: +SKIP

Sections: ``[model]`` (preset + overrides, ``init_from``, ``train_encoder``), ``[data]`` (a folder of images or
official jsonl splits, crop size, global batch), ``[train]`` (steps, optimiser and loss weights), ``[run]``,
``[tracking]`` and ``[ray]`` (shared with the AR trainer, :mod:`infinity_run.config`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infinity_run import config as run_config
from infinity_run.config import RaySection, RunConfig, TrackingSection
from infinity_run.config import RunSection as BaseRunSection

from bsq_tokenizer.config import PRESETS, TokenizerConfig
from bsq_tokenizer.train.trainer import TokenizerTrainConfig


@dataclass(frozen=True, kw_only=True)
class ModelSection:
    """The architecture (a preset + field overrides) and where training starts."""

    preset: str = "debug"
    overrides: dict = field(default_factory=dict)
    init_from: str = ""
    """A tokenizer directory (``save_pretrained`` layout) to start from; "" = random weights."""
    train_encoder: bool = True

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"model.preset {self.preset!r} unknown; choose one of {sorted(PRESETS)}")

    def tokenizer_config(self) -> TokenizerConfig:
        return PRESETS[self.preset].replace(**self.overrides)


@dataclass(frozen=True, kw_only=True)
class DataSection:
    """Training images: ``source`` is a folder of images or official jsonl splits (:mod:`bsq_tokenizer.train.data`)."""

    source: str = ""
    image_size: int = 64
    batch_size: int = 8
    """The global batch, split evenly over the workers."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.image_size < 1:
            raise ValueError("data.batch_size and data.image_size must be >= 1")


@dataclass(frozen=True, kw_only=True)
class TrainSection:
    """Steps, optimiser and loss weights (the fields of :class:`TokenizerTrainConfig`)."""

    steps: int = 1000
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    l1_weight: float = 1.0
    l2_weight: float = 0.0
    perceptual_weight: float = 0.0
    perceptual_backbone: str = ""
    perceptual_heads: str = ""
    gan_weight: float = 0.0
    gan_start_step: int = 0
    discriminator_channels: int = 64
    discriminator_lr_mult: float = 2.0
    commitment_weight: float = 1.0
    entropy_weight: float = 0.004
    inv_temperature: float = 100.0
    scale_drop_prob: float = 0.5
    code_flip_prob: float = 0.0


@dataclass(frozen=True, kw_only=True)
class RunSection(BaseRunSection):
    """``[run]`` (:class:`infinity_run.config.RunSection`) with this package's output directory."""

    out_dir: str = "outputs/tokenizer"


@dataclass(frozen=True, kw_only=True)
class TokenizerTrackingSection(TrackingSection):
    """``[tracking]`` with this package's MLflow experiment."""

    experiment: str = "bsq-tokenizer"


@dataclass(frozen=True, kw_only=True)
class TokenizerRunConfig(RunConfig):
    """All sections of a tokenizer training run."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    run: RunSection = field(default_factory=RunSection)
    tracking: TokenizerTrackingSection = field(default_factory=TokenizerTrackingSection)
    ray: RaySection = field(default_factory=RaySection)

    def __post_init__(self) -> None:
        if self.ray.strategy != "ddp":
            raise ValueError("tokenizer training supports ray.strategy='ddp' only (the tokenizer fits on one device)")
        self.train_config()  # validates the combination (loss weights, init_from, ...)

    def train_config(self) -> TokenizerTrainConfig:
        """The loop's settings."""
        t = dataclasses.asdict(self.train)
        t["perceptual_backbone"] = t["perceptual_backbone"] or None
        t["perceptual_heads"] = t["perceptual_heads"] or None
        return TokenizerTrainConfig(
            model=self.model.tokenizer_config(),
            init_from=self.model.init_from or None,
            train_encoder=self.model.train_encoder,
            seed=self.run.seed,
            log_every=self.run.log_every,
            image_every=self.run.image_every,
            checkpoint_every=self.run.checkpoint_every,
            **t,
        )


def load_run_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TokenizerRunConfig:
    """Read a TOML run config (or the defaults with ``path=None``) and apply dotted overrides."""
    return run_config.load_config(TokenizerRunConfig, path, list(overrides))
