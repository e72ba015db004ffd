"""Run configuration of AR training: frozen sections loaded from TOML, with dotted command-line overrides.

>>> cfg = load_config("configs/train/debug.toml", ["optim.lr=1e-3", "train.steps=2"])  # doctest: +SKIP

Parsing, overrides and errors are :mod:`infinity_run.config` (one syntax for every package): unknown sections or keys
are rejected with the valid names, values are type-checked against the fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infinity_run import config as run_config
from infinity_run.config import RaySection, RunConfig, TrackingSection
from infinity_run.config import RunSection as BaseRunSection

from bitwise_ar.config import PRESETS, LoraSettings


@dataclass(frozen=True, kw_only=True)
class ModelSection:
    """What is trained: an architecture preset (+ field overrides), its tokenizer and text encoder."""

    preset: str = "debug"
    overrides: dict = field(default_factory=dict)
    tokenizer: str = ""
    """Directory of a trained tokenizer (``save_pretrained`` layout); "" = a random ``debug`` tokenizer (tests)."""
    text_encoder: str = ""
    """Directory of a T5 encoder (HF layout); "" = random word-hash features (tests)."""
    init_from: str = ""
    """Fine-tune: a checkpoint of ours (``*.pt`` / pipeline directory) or an official ``.pth``; "" = from scratch."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"model.preset {self.preset!r} unknown; choose one of {sorted(PRESETS)}")


@dataclass(frozen=True, kw_only=True)
class DataSection:
    """Where images and captions come from (:mod:`bitwise_ar.train.sources`)."""

    source: str = ""
    """An official jsonl split folder or webdataset shards (``format``), or the name of a data source: ``synthetic``
    (built in) or one an installed package registers, such as ``shapes`` (ShapesT2I, from ``infinity-shapes``)."""
    format: str = "auto"
    pn: str = "0.06M"
    image_size: int = 0
    """> 0: scale every template so 1:1 is this many pixels (overrides pn)."""
    batch_size: int = 8
    """Global batch of one micro-step, split evenly over the workers (each gets batch_size / num_workers)."""
    short_caption_prob: float = 0.0
    seed: int = 0
    options: dict = field(default_factory=dict)
    """Settings of a named source, e.g. ``{ ordered = true, rows = true }`` for ``shapes``; that source checks them."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.format not in ("auto", "jsonl", "webdataset"):
            raise ValueError(f"data.format must be 'auto', 'jsonl' or 'webdataset', got {self.format!r}")


@dataclass(frozen=True, kw_only=True)
class ValSection(DataSection):
    """``[val]``: the held-out validation loss the trainer logs every ``every`` steps (off while ``source`` is "").

    The data fields are those of ``[data]`` (``source``, ``format``, ``options``, ``pn``, ``image_size``, ``seed``,
    ``batch_size`` = the global batch, split over the workers): a held-out split folder or shards, or a named source
    with another ``seed`` than training (``source = "shapes"``, ``seed = 999``). Every evaluation reads the same first
    ``batches`` batches, teacher-forced (no Bitwise Self-Correction, no text dropout, the model in eval mode), so the
    number at a step is deterministic; the batches go through the frozen tokenizer and text encoder once and are
    kept in host memory. It is logged as ``val_loss/bit_ce`` (uniform token mean),
    ``val_loss/bit_ce_reweighted``, accuracies and ``val_loss/scale_XX`` (:mod:`bitwise_ar.train.validation`).
    """

    seed: int = 1
    """Default 1, not ``[data]``'s 0: a named source's stream with the training seed would be the training data."""
    every: int = 100
    batches: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.every < 1:
            raise ValueError(f"val.every must be >= 1 (validate every N training steps), got {self.every}")
        if self.batches < 1:
            raise ValueError(f"val.batches must be >= 1 (the number of held-out batches per evaluation), got {self.batches}")

    @property
    def enabled(self) -> bool:
        return bool(self.source)


@dataclass(frozen=True, kw_only=True)
class OptimSection:
    """AdamW with the official no-decay groups, warm-up, schedule, clipping, accumulation."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.97)
    weight_decay: float = 0.005
    warmup_steps: int = 0
    schedule: str = "constant"
    """"constant", "linear" (to min_lr_ratio) or "cosine"; after warm-up."""
    min_lr_ratio: float = 0.0
    grad_clip: float = 5.0
    grad_accum: int = 1

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        if self.schedule not in ("constant", "linear", "cosine"):
            raise ValueError(f"optim.schedule must be 'constant', 'linear' or 'cosine', got {self.schedule!r}")
        if self.grad_accum < 1:
            raise ValueError(f"optim.grad_accum must be >= 1, got {self.grad_accum}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))


@dataclass(frozen=True, kw_only=True)
class TrainSection:
    """The training objective and numerics."""

    steps: int = 100
    bsc_max_flip: float = 0.3
    """Bitwise Self-Correction: each scale's flip rate is uniform in [0, bsc_max_flip] (paper: 0.3)."""
    teacher_forcing: bool = False
    """True disables BSC (inputs are the exact ground-truth prefixes)."""
    reweight_by_scale: bool = True
    cond_drop_rate: float = -1.0
    """Text dropout for CFG; < 0 uses the model config's value (0.1)."""
    activation_checkpointing: bool = False
    precision: str = "auto"
    """"fp32", "bf16" (autocast) or "auto" (bf16 on CUDA, fp32 on CPU)."""
    attention: str = "sdpa"
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"train.steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.bsc_max_flip <= 1.0:
            raise ValueError(f"train.bsc_max_flip must be in [0, 1], got {self.bsc_max_flip}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"train.precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")


@dataclass(frozen=True, kw_only=True)
class RunSection(BaseRunSection):
    """``[run]`` (:class:`infinity_run.config.RunSection`) plus the prompts of the logged sample images."""

    out_dir: str = "outputs/train"
    sample_prompts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "sample_prompts", tuple(self.sample_prompts))


@dataclass(frozen=True, kw_only=True)
class ARTrackingSection(TrackingSection):
    """``[tracking]`` (:class:`infinity_run.config.TrackingSection`) with this package's MLflow experiment."""

    experiment: str = "bitwise-ar"


@dataclass(frozen=True, kw_only=True)
class TrainConfig(RunConfig):
    """All sections of a training run."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    run: RunSection = field(default_factory=RunSection)
    tracking: ARTrackingSection = field(default_factory=ARTrackingSection)
    ray: RaySection = field(default_factory=RaySection)
    lora: LoraSettings = field(default_factory=LoraSettings)
    """``[lora]``: rank > 0 freezes the model (usually ``model.init_from``) and trains LoRA adapters only."""
    val: ValSection = field(default_factory=ValSection)
    """``[val]``: held-out validation loss during training (off by default)."""

    def __post_init__(self) -> None:
        same = ("source", "format", "options", "seed")
        if self.val.enabled and all(getattr(self.val, k) == getattr(self.data, k) for k in same):
            raise ValueError(
                f"val.source {self.val.source!r} with val.seed={self.val.seed} is the training data itself; give a "
                "held-out split or another val.seed"
            )

    def per_worker_val_batch(self, world_size: int) -> int:
        """``val.batch_size / world_size``; ValueError when the global validation batch cannot be split evenly."""
        if self.val.batch_size % world_size:
            raise ValueError(
                f"val.batch_size={self.val.batch_size} (the global batch) cannot be split over {world_size} workers; "
                f"use a multiple of {world_size}"
            )
        return self.val.batch_size // world_size


def load_config(path: str | Path | None = None, overrides: Sequence[str] | None = None) -> TrainConfig:
    """Read a TOML run config (or the defaults with ``path=None``) and apply dotted overrides."""
    return run_config.load_config(TrainConfig, path, list(overrides or []))
