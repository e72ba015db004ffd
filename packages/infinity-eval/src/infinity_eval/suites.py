"""Named evaluation suites (which prompts, how many images, which metrics) and the run configuration."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infinity_run.config import ConfigError, TrackingSection, apply_overrides, from_dict, read_toml
from infinity_run.config import RunConfig as RunConfigBase

from infinity_eval.scorers import MetricSpec
from infinity_eval.weights import WeightsConfig


@dataclass(frozen=True, kw_only=True)
class BenchmarkConfig:
    """One benchmark of a suite; ``expected_prompts`` is the completeness gate of the published protocol."""

    name: str
    prompts: str
    images_per_prompt: int
    metrics: tuple[MetricSpec, ...]
    layout: str = "flat"
    expected_prompts: int | None = None

    def __post_init__(self) -> None:
        if self.images_per_prompt < 1:
            raise ValueError(f"{self.name}: images_per_prompt must be >= 1, got {self.images_per_prompt}")
        if self.layout not in ("flat", "geneval", "hps"):
            raise ValueError(f"{self.name}: layout must be 'flat', 'geneval' or 'hps', got {self.layout!r}")
        if not self.metrics:
            raise ValueError(f"{self.name}: a benchmark needs at least one metric")


@dataclass(frozen=True, kw_only=True)
class SuiteConfig:
    """A named set of benchmarks."""

    name: str
    benchmarks: tuple[BenchmarkConfig, ...]


GENEVAL = BenchmarkConfig(name="geneval", prompts="geneval", images_per_prompt=4, metrics=(MetricSpec(name="geneval"),),
                          layout="geneval", expected_prompts=553)
IMAGEREWARD = BenchmarkConfig(name="imagereward", prompts="imagereward", images_per_prompt=10,
                              metrics=(MetricSpec(name="imagereward"), MetricSpec(name="clip")), expected_prompts=100)
HPSV21 = BenchmarkConfig(name="hpsv21", prompts="hpsv21:{hps_prompts}", images_per_prompt=1,
                         metrics=(MetricSpec(name="hpsv21"),), layout="hps", expected_prompts=3200)
SHAPES = BenchmarkConfig(name="shapes", prompts="shapes:240", images_per_prompt=1, metrics=(MetricSpec(name="shapes"),),
                         expected_prompts=240)

SUITES: dict[str, SuiteConfig] = {
    "geneval": SuiteConfig(name="geneval", benchmarks=(GENEVAL,)),
    "imagereward": SuiteConfig(name="imagereward", benchmarks=(IMAGEREWARD,)),
    "hpsv21": SuiteConfig(name="hpsv21", benchmarks=(HPSV21,)),
    "infinity-paper": SuiteConfig(name="infinity-paper", benchmarks=(GENEVAL, IMAGEREWARD, HPSV21)),
    "shapes-demo": SuiteConfig(name="shapes-demo", benchmarks=(SHAPES,)),
}


@dataclass(frozen=True, kw_only=True)
class RunSection:
    """``[run]`` of an eval config file (``configs/eval/*.toml``): what to evaluate and where."""

    suite: str = ""
    model: str | None = None
    score_only: Path | None = None
    out: Path | None = None
    hps_prompts: str | None = None
    workers: int = 0
    chunk_size: int = 8
    seed: int = 0
    allow_incomplete: bool = False
    limit: int | None = None
    bootstrap_samples: int = 1000
    device: str = "cpu"
    progress: bool = True


@dataclass(frozen=True, kw_only=True)
class EvalConfig(RunConfigBase):
    """An eval config file: ``[run]``, ``[weights]``, ``[generation]`` (pipeline options, free-form) and
    ``[tracking]`` (:class:`infinity_run.config.TrackingSection`: ``kind = "mlflow"`` logs to ``tracking_uri`` >
    ``$MLFLOW_TRACKING_URI`` > ``sqlite:///<run.out>/mlflow.db``). Overrides: ``run.seed=3``,
    ``generation.sampling.cfg=3``, ``weights.clip=/path``, ``tracking.kind=mlflow``."""

    run: RunSection = field(default_factory=RunSection)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    generation: dict[str, Any] = field(default_factory=dict)
    tracking: TrackingSection = field(default_factory=lambda: TrackingSection(experiment="infinity-eval"))


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything a run needs. Built from a TOML file (``configs/eval/*.toml``) plus dotted CLI overrides."""

    suite: SuiteConfig
    out: Path
    model: str | None = None
    score_only: Path | None = None
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    workers: int = 0
    chunk_size: int = 8
    seed: int = 0
    allow_incomplete: bool = False
    limit: int | None = None
    bootstrap_samples: int = 1000
    generation: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    tracking: TrackingSection = field(default_factory=TrackingSection)
    progress: bool = True

    def __post_init__(self) -> None:
        if (self.model is None) == (self.score_only is None):
            raise ValueError("give exactly one of --model (generate + score) or --score-only <image dir>")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = in-process), got {self.workers}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


def resolve_suite(name_or_path: str, *, substitutions: Mapping[str, str] | None = None) -> SuiteConfig:
    """A built-in suite name or a TOML file with ``[[benchmarks]]`` tables; ``{hps_prompts}`` etc. are filled in."""
    if name_or_path in SUITES:
        suite = SUITES[name_or_path]
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"unknown suite {name_or_path!r}; choose one of {', '.join(SUITES)} or give a TOML file")
        data = read_toml(path, what="suite")
        try:
            benches = []
            for b in data.get("benchmarks", []):
                metrics = tuple(MetricSpec(name=m["name"], options={k: v for k, v in m.items() if k != "name"})
                                if isinstance(m, dict) else MetricSpec(name=m) for m in b.get("metrics", []))
                benches.append(BenchmarkConfig(**{k: v for k, v in b.items() if k != "metrics"}, metrics=metrics))
            suite = SuiteConfig(name=data.get("name", path.stem), benchmarks=tuple(benches))
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            raise ValueError(f"suite file {str(path)!r}: {exc}; each [[benchmarks]] table needs name, prompts, "
                             "images_per_prompt and metrics") from None  # fmt: skip
    subs = dict(substitutions or {})
    out = []
    for b in suite.benchmarks:
        prompts = b.prompts
        if "{" in prompts:
            try:
                prompts = prompts.format(**subs)
            except KeyError as exc:
                raise ValueError(f"benchmark {b.name!r} needs run option {exc.args[0]!r} (e.g. --set {exc.args[0]}=<dir>)") from exc
        out.append(dataclasses.replace(b, prompts=prompts))
    return dataclasses.replace(suite, benchmarks=tuple(out))


def build_run_config(data: Mapping[str, Any], overrides: Sequence[str] = (), *, source: str = "config") -> RunConfig:
    """:class:`RunConfig` from an eval config's nested dict (:class:`EvalConfig` layout) and dotted overrides."""
    file = from_dict(EvalConfig, apply_overrides(data, overrides, schema=EvalConfig, source=source),
                     source=f"{source} + overrides" if overrides else source)  # fmt: skip
    run = file.run
    if not run.suite or run.out is None:
        raise ConfigError(f"{source}: a run needs run.suite and run.out (e.g. --suite geneval --out outputs/eval)")
    subs = {"hps_prompts": run.hps_prompts} if run.hps_prompts is not None else {}
    return RunConfig(
        suite=resolve_suite(run.suite, substitutions=subs), out=run.out, model=run.model, score_only=run.score_only,
        weights=file.weights, workers=run.workers, chunk_size=run.chunk_size, seed=run.seed,
        allow_incomplete=run.allow_incomplete, limit=run.limit, bootstrap_samples=run.bootstrap_samples,
        generation=file.generation, device=run.device, tracking=file.tracking, progress=run.progress,
    )  # fmt: skip


def load_run_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """:func:`build_run_config` of a TOML file (or none: the overrides alone)."""
    data = read_toml(path) if path is not None else {}
    return build_run_config(data, overrides, source=str(path) if path is not None else "defaults")
