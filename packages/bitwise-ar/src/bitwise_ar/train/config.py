"""Run configuration of AR training: frozen sections loaded from TOML, with dotted command-line overrides.

>>> cfg = load_config("configs/train/debug.toml", ["optim.lr=1e-3", "run.steps=2"])  # doctest: +SKIP

Unknown sections or keys are rejected with the valid names; values are type-checked against the field defaults.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints


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
        from bitwise_ar.config import PRESETS

        if self.preset not in PRESETS:
            raise ValueError(f"model.preset {self.preset!r} unknown; choose one of {sorted(PRESETS)}")


@dataclass(frozen=True, kw_only=True)
class DataSection:
    """Where images and captions come from; ``source = "shapes"`` generates ShapesT2I on the fly."""

    source: str = "shapes"
    format: str = "auto"
    pn: str = "0.06M"
    image_size: int = 0
    """> 0: scale every template so 1:1 is this many pixels (overrides pn)."""
    batch_size: int = 8
    short_caption_prob: float = 0.0
    seed: int = 0
    shapes_grid: int = 0
    """ShapesT2I only: snap objects to a lattice of this many pixels (:attr:`bitwise_ar.shapes.RenderConfig.grid`)."""
    shapes_ordered: bool = False
    """ShapesT2I only: two groups without a relation are drawn left to right (:attr:`RenderConfig.ordered`)."""
    shapes_rows: bool = False
    """ShapesT2I only: the objects of a group are drawn in a line, one per slot (:attr:`RenderConfig.rows`)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.format not in ("auto", "jsonl", "webdataset"):
            raise ValueError(f"data.format must be 'auto', 'jsonl' or 'webdataset', got {self.format!r}")


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
class RunSection:
    """Output, checkpoints, logging."""

    out_dir: str = "outputs/train"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    image_every: int = 0
    sample_prompts: tuple[str, ...] = ()
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample_prompts", tuple(self.sample_prompts))
        if self.log_every < 1 or self.checkpoint_every < 0:
            raise ValueError("run.log_every must be >= 1 and run.checkpoint_every >= 0")


@dataclass(frozen=True, kw_only=True)
class TrackingSection:
    """``kind = "mlflow"`` logs to $MLFLOW_TRACKING_URI or a local sqlite store (``mlflow.db``)."""

    kind: str = "none"
    experiment: str = "bitwise-ar"
    run_name: str = ""
    tracking_uri: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("none", "mlflow"):
            raise ValueError(f"tracking.kind must be 'none' or 'mlflow', got {self.kind!r}")


@dataclass(frozen=True, kw_only=True)
class RaySection:
    """Ray Train settings (used by :mod:`bitwise_ar.train.ray_entry` only)."""

    num_workers: int = 1
    use_gpu: bool = False
    strategy: str = "ddp"
    max_failures: int = 0
    address: str = ""

    def __post_init__(self) -> None:
        if self.strategy not in ("ddp", "fsdp"):
            raise ValueError(f"ray.strategy must be 'ddp' or 'fsdp', got {self.strategy!r}")
        if self.num_workers < 1:
            raise ValueError(f"ray.num_workers must be >= 1, got {self.num_workers}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """All sections of a training run."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    run: RunSection = field(default_factory=RunSection)
    tracking: TrackingSection = field(default_factory=TrackingSection)
    ray: RaySection = field(default_factory=RaySection)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (round-trips through :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from nested dicts; unknown sections/keys raise ValueError listing the valid names."""
        sections = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(sections))
        if unknown:
            raise ValueError(f"unknown config sections {unknown}; valid sections: {sorted(sections)}")
        hints = get_type_hints(cls)
        built = {}
        for name, value in data.items():
            section_cls = hints[name]
            if not isinstance(value, dict):
                raise ValueError(f"config section [{name}] must be a table, got {value!r}")
            valid = {f.name for f in dataclasses.fields(section_cls)}
            bad = sorted(set(value) - valid)
            if bad:
                raise ValueError(f"unknown keys {bad} in [{name}]; valid keys: {sorted(valid)}")
            built[name] = section_cls(**value)
        return cls(**built)

    def replace(self, **sections: Any) -> TrainConfig:
        """A copy with whole sections replaced."""
        return dataclasses.replace(self, **sections)


def _coerce(text: str, default: Any) -> Any:
    """Parse a CLI value by the type of the field's default (TOML syntax for lists/dicts)."""
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, (tuple, list, dict)):
        return tomllib.loads(f"v = {text}")["v"]
    return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (``model.overrides.depth=4`` reaches into dict fields)."""
    defaults = TrainConfig().to_dict()
    out = {k: dict(v) for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. optim.lr=1e-3)")
        path, text = item.split("=", 1)
        parts = path.strip().split(".")
        if len(parts) < 2 or parts[0] not in defaults:
            raise ValueError(f"override {path!r}: the first part must be a section, one of {sorted(defaults)}")
        section, key = parts[0], parts[1]
        if key not in defaults[section]:
            raise ValueError(f"unknown key {key!r} in [{section}]; valid keys: {sorted(defaults[section])}")
        target = out.setdefault(section, {})
        if len(parts) > 2:
            nested = dict(target.get(key, {}))
            nested[".".join(parts[2:])] = tomllib.loads(f"v = {text}")["v"] if text else text
            target[key] = nested
        else:
            try:
                target[key] = _coerce(text, defaults[section][key])
            except (ValueError, tomllib.TOMLDecodeError) as err:
                raise ValueError(f"override {path}={text!r}: {err}") from None
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a TOML run config (or the defaults with ``path=None``) and apply dotted overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config {path} not found")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path} is not valid TOML: {err}") from None
    return TrainConfig.from_dict(apply_overrides(data, overrides or []))
