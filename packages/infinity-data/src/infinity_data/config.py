"""Run configuration of a curation job: frozen dataclasses built from ``configs/data/*.toml`` plus dotted overrides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infinity_run.config import ConfigError, RunConfig, TrackingSection, apply_overrides, from_dict, read_toml

from .decode import DecodeConfig
from .filters import FiltersConfig

__all__ = [
    "CurateConfig",
    "InputConfig",
    "OutputConfig",
    "RayConfig",
    "ReportConfig",
    "config_from_dict",
    "load_config",
]

INPUT_FORMATS = ("auto", "webdataset", "folder", "jsonl")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, kw_only=True)
class InputConfig:
    """Where samples come from.

    ``paths`` may name webdataset ``.tar`` files, directories of them, image folders (``x.jpg`` + ``x.txt`` caption,
    optional ``x.json``), or official ``<template>_<count>.jsonl`` split files / folders of them. One input shard
    (the unit of commit) is a tar file, or ``samples_per_shard`` consecutive images/lines of a folder/jsonl file.
    """

    paths: tuple[str, ...] = ()
    format: str = "auto"
    image_root: str = ""  # base for relative ``image_path`` in jsonl inputs; "" = the current directory
    samples_per_shard: int = 1000

    def __post_init__(self) -> None:
        if not self.paths:
            raise ValueError("input.paths is empty; set input.paths = [\"/data/shards\"] in the config or override it")
        if self.format not in INPUT_FORMATS:
            raise ValueError(f"input.format={self.format!r}; choose one of {INPUT_FORMATS}")
        if self.samples_per_shard < 1:
            raise ValueError(f"input.samples_per_shard must be >= 1, got {self.samples_per_shard}")


@dataclass(frozen=True, kw_only=True)
class OutputConfig:
    """Output folder: ``shards/*.tar`` (kept samples), ``stats/*.stats.json`` (commit markers), ``report/``.

    ``write_splits`` also materialises images under ``images/`` and writes the official ``splits/*.jsonl`` files.
    """

    path: str = ""
    write_splits: bool = False
    split_image_paths: str = "absolute"  # "absolute" or "relative" (to the output folder)

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("output.path is empty; set it in the config or pass output.path=/data/curated")
        if self.split_image_paths not in ("absolute", "relative"):
            raise ValueError(f"output.split_image_paths must be 'absolute' or 'relative', got {self.split_image_paths!r}")


@dataclass(frozen=True, kw_only=True)
class RayConfig:
    """Ray execution. ``address = ""`` starts an embedded local Ray; ``"auto"`` joins a running cluster (ray job submit)."""

    address: str = ""
    num_cpus: int = 0  # embedded Ray only; 0 = all cores
    batch_size: int = 64
    metadata_concurrency: int = 0  # max parallel metadata tasks; 0 = Ray decides
    model_actors: int = 1
    model_num_gpus: float = 0.0
    log_level: str = "info"  # Ray's own log lines on the driver ("warning": only problems; the CLI's --quiet)

    def __post_init__(self) -> None:
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"ray.log_level must be one of {LOG_LEVELS}, got {self.log_level!r}")
        if self.num_cpus < 0 or self.batch_size < 1 or self.metadata_concurrency < 0 or self.model_actors < 1:
            raise ValueError("ray.num_cpus/metadata_concurrency must be >= 0, ray.batch_size/model_actors >= 1")
        if self.model_num_gpus < 0:
            raise ValueError(f"ray.model_num_gpus must be >= 0, got {self.model_num_gpus}")


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    """Reports are always written to ``<output>/report``; ``[tracking]`` decides whether the run is logged to MLflow."""

    histogram_bins: int = 20
    plots: bool = True

    def __post_init__(self) -> None:
        if self.histogram_bins < 2:
            raise ValueError(f"report.histogram_bins must be >= 2, got {self.histogram_bins}")


@dataclass(frozen=True, kw_only=True)
class CurateConfig(RunConfig):
    """A whole curation run. ``executor = "ray"`` (default) or ``"local"`` (single process, same code, no Ray).

    ``[tracking]`` is :class:`infinity_run.config.TrackingSection`: ``kind = "mlflow"`` logs the run (every setting as a
    param, per-filter counts as metrics) to ``tracking_uri`` > ``$MLFLOW_TRACKING_URI`` > ``<output.path>/mlflow.db``.
    """

    input: InputConfig
    output: OutputConfig
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    executor: str = "ray"
    ray: RayConfig = field(default_factory=RayConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    tracking: TrackingSection = field(default_factory=lambda: TrackingSection(experiment="infinity-data"))
    progress: bool = True

    def __post_init__(self) -> None:
        if self.executor not in ("ray", "local"):
            raise ValueError(f"executor must be 'ray' or 'local', got {self.executor!r}")


def config_from_dict(data: Mapping[str, Any], overrides: Sequence[str] = (), *, source: str = "config") -> CurateConfig:
    """Build a :class:`CurateConfig` from a nested mapping (a parsed TOML file) and dotted overrides."""
    merged = apply_overrides(data, overrides, schema=CurateConfig, source=source)
    for section in ("input", "output"):
        if section not in merged:
            raise ConfigError(f"{source}: the config has no [{section}] section")
    return from_dict(CurateConfig, merged, source=f"{source} + overrides" if overrides else source)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> CurateConfig:
    """Read ``configs/data/<name>.toml`` and apply ``section.key=value`` overrides (:mod:`infinity_run.config`)."""
    return config_from_dict(read_toml(path), overrides, source=str(path))
