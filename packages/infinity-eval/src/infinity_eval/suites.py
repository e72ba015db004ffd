"""Named evaluation suites (which prompts, how many images, which metrics) and the run configuration."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
class MlflowConfig:
    """Where to log; ``tracking_uri`` e.g. ``sqlite:///mlflow.db`` or ``http://127.0.0.1:5000``."""

    tracking_uri: str
    experiment: str = "infinity-eval"
    run_name: str | None = None


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
    mlflow: MlflowConfig | None = None
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


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Parse a TOML file; every failure is a ValueError (FileNotFoundError when missing) that names the file."""
    path = Path(path)
    if not path.is_file():
        kind = "is a directory" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{what} {str(path)!r} {kind}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {str(path)!r} is not valid TOML: {exc}") from None


def resolve_suite(name_or_path: str, *, substitutions: Mapping[str, str] | None = None) -> SuiteConfig:
    """A built-in suite name or a TOML file with ``[[benchmarks]]`` tables; ``{hps_prompts}`` etc. are filled in."""
    if name_or_path in SUITES:
        suite = SUITES[name_or_path]
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"unknown suite {name_or_path!r}; choose one of {', '.join(SUITES)} or give a TOML file")
        data = read_toml(path, "suite file")
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


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (value parsed as TOML when possible, else a string) to nested dicts."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a table")
        node[parts[-1]] = value
    return data


def build_run_config(data: Mapping[str, Any]) -> RunConfig:
    """RunConfig from a nested dict (TOML layout: top-level run keys, ``[weights]``, ``[mlflow]``, ``[generation]``)."""
    data = dict(data)
    known = {f.name for f in dataclasses.fields(RunConfig)} | {"hps_prompts"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown run config keys: {sorted(unknown)}; known: {sorted(known)}")
    if "suite" not in data or "out" not in data:
        raise ValueError("a run needs 'suite' and 'out'")
    subs = {"hps_prompts": str(data.pop("hps_prompts"))} if "hps_prompts" in data else {}
    weights = data.pop("weights", {}) or {}
    weights = WeightsConfig(**{k: Path(v) for k, v in weights.items()})
    mlflow = data.pop("mlflow", None)
    return RunConfig(
        suite=resolve_suite(str(data.pop("suite")), substitutions=subs),
        out=Path(data.pop("out")),
        score_only=Path(data.pop("score_only")) if data.get("score_only") else data.pop("score_only", None),
        weights=weights,
        mlflow=MlflowConfig(**mlflow) if mlflow else None,
        **data,
    )
