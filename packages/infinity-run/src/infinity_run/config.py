"""Run configs: frozen dataclasses of sections, read from TOML, changed by ``section.key=value`` overrides.

One syntax and one meaning for every package:

* an override is ``dotted.path=value``; the path names a section and a key (``optim.lr=1e-3``), deeper parts reach
  into dict fields (``model.overrides.depth=4``);
* the value is read as a TOML value when it is one (``3``, ``1e-3``, ``true``, ``"a b"``, ``[1, 2]``,
  ``{a = 1}``) and as a plain string otherwise (``run.out_dir=/tmp/x``), so ``run.out_dir="/tmp/x"`` and
  ``run.out_dir=/tmp/x`` mean the same;
* the value must fit the field's type (ints are accepted for floats, strings for paths; anything is accepted for
  strings);
* every error names the offending override or file and the valid names.

>>> from dataclasses import dataclass, field
>>> @dataclass(frozen=True, kw_only=True)
... class Optim:
...     lr: float = 1e-4
>>> @dataclass(frozen=True, kw_only=True)
... class Run:
...     optim: Optim = field(default_factory=Optim)
>>> load_config(Run, None, ["optim.lr=3e-4"]).optim.lr
0.0003
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "RaySection",
    "RunConfig",
    "RunSection",
    "TrackingSection",
    "apply_overrides",
    "from_dict",
    "load_config",
    "parse_value",
    "read_toml",
    "split_override",
    "to_dict",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackingSection:
    """``[tracking]`` of every run: ``kind = "mlflow"`` logs to ``tracking_uri`` > ``$MLFLOW_TRACKING_URI`` >
    ``sqlite:///<run.out_dir>/mlflow.db`` (:func:`infinity_run.tracking.resolve_tracking_uri`)."""

    kind: str = "none"
    experiment: str = "infinity"
    run_name: str = ""
    tracking_uri: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("none", "mlflow"):
            raise ValueError(f"tracking.kind must be 'none' or 'mlflow', got {self.kind!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RaySection:
    """``[ray]`` of every training run (used with ``--ray``)."""

    num_workers: int = 1
    use_gpu: bool = False
    strategy: str = "ddp"
    """"ddp" (replicated weights) or "fsdp" (FSDP2: weights, gradients and optimiser state sharded; AR only)."""
    max_failures: int = 0
    address: str = ""
    storage_path: str = ""
    """Where Ray Train persists checkpoints: a path every node can reach or a cloud URI (s3://, gs://); "" =
    ``<run.out_dir>/ray``."""
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        if self.strategy not in ("ddp", "fsdp"):
            raise ValueError(f"ray.strategy must be 'ddp' or 'fsdp', got {self.strategy!r}")
        if self.num_workers < 1:
            raise ValueError(f"ray.num_workers must be >= 1, got {self.num_workers}")
        if self.threads_per_worker < 1:
            raise ValueError(f"ray.threads_per_worker must be >= 1, got {self.threads_per_worker}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSection:
    """``[run]`` of every training run: output directory, seed, and how often to log, checkpoint and sample."""

    out_dir: str = "outputs/run"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100
    """Steps between checkpoints (0: only at the end)."""
    image_every: int = 0
    """Steps between logged sample images (0: never)."""
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.log_every < 1 or self.checkpoint_every < 0 or self.image_every < 0:
            raise ValueError("run.log_every must be >= 1, run.checkpoint_every and run.image_every >= 0")
        if self.keep_checkpoints < 1:
            raise ValueError(f"run.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file or override and how to fix it."""


def read_toml(path: str | Path, *, what: str = "config") -> dict[str, Any]:
    """Parse a TOML file; errors name the file (and TOML's line and column)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file {path} not found")
    if not path.is_file():
        raise ConfigError(f"{what} file {path} is not a file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a UTF-8 text file (expected a TOML {what})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None


def parse_value(text: str) -> Any:
    """An override's value: a TOML value when ``text`` is one, else the text itself (a bare string)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def split_override(item: str) -> tuple[list[str], str]:
    """``"a.b.c=text"`` -> ``(["a", "b", "c"], "text")``; :class:`ConfigError` naming ``item`` when it is not an
    override (for tools that pass overrides on to a CLI, such as ``infinity-ray submit``)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=1e-3)")
    path, text = item.split("=", 1)
    parts = [p.strip() for p in path.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty name in the dotted path {path!r}")
    return parts, text.strip()


def apply_overrides(
    data: Mapping[str, Any], overrides: Sequence[str], *, schema: type | None = None, source: str | None = None
) -> dict[str, Any]:
    """``data`` (nested dicts) with every override applied, in order; ``schema`` (a config dataclass) checks names
    and types so the error names the override; ``source`` (the file ``data`` came from) is named in errors too."""
    out = _deep_copy(data)
    for item in overrides:
        try:
            _apply(out, item, schema)
        except ConfigError as err:
            if source is None:
                raise
            raise ConfigError(f"{err} (overriding {source})") from None
    return out


def _apply(out: dict[str, Any], item: str, schema: type | None) -> None:
    parts, text = split_override(item)
    value = parse_value(text)
    if schema is not None:
        value = _check_path(schema, parts, value, item)
    target = out
    for part in parts[:-1]:
        nested = target.get(part)
        if nested is None:
            nested = target[part] = {}
        elif not isinstance(nested, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a table")
        target = nested
    target[parts[-1]] = value


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _check_path(cls: type, parts: list[str], value: Any, item: str) -> Any:
    """Walk ``parts`` through nested config dataclasses; return ``value`` converted to the leaf field's type."""
    current: Any = cls
    for depth, part in enumerate(parts):
        if not (isinstance(current, type) and dataclasses.is_dataclass(current)):
            if current is Any or current is dict or typing.get_origin(current) is dict:
                return value  # inside a free-form dict field (e.g. model.overrides.depth)
            raise ConfigError(f"override {item!r}: {parts[depth - 1]!r} is not a table")
        fields = _fields(current)
        if part not in fields:
            where = ".".join(parts[:depth]) or "the top level"
            raise ConfigError(f"override {item!r}: unknown key {part!r} in {where}; valid keys: {sorted(fields)}")
        hint = typing.get_type_hints(current)[part]
        if depth == len(parts) - 1:
            try:
                return _convert(value, hint)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"override {item!r}: {err}") from None
        current = hint
    return value


def _convert(value: Any, hint: Any) -> Any:
    """``value`` as the annotated type (ints widen to float, anything is a string for ``str``), else TypeError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        errors = []
        for option in options:
            try:
                return _convert(value, option)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise TypeError("; ".join(errors))
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(f"expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError(f"expected a number, got {value!r}")
    if hint is str:
        return value if isinstance(value, str) else _toml_text(value)
    if hint is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise TypeError(f"expected a path, got {value!r}")
    if origin in (tuple, list) or hint in (tuple, list):
        if isinstance(value, (list, tuple)):
            args = [a for a in typing.get_args(hint) if a is not Ellipsis]
            if len(args) == 1:
                value = [_convert(v, args[0]) for v in value]
            elif args and len(args) == len(value):
                value = [_convert(v, a) for v, a in zip(value, args, strict=True)]
            return tuple(value) if (origin or hint) is tuple else list(value)
        raise TypeError(f"expected a list such as [1, 2], got {value!r}")
    if origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
        raise TypeError(f"expected a table such as {{a = 1}}, got {value!r}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, dict):
            return value
        raise TypeError(f"expected a table, got {value!r}")
    return value


def _toml_text(value: Any) -> str:
    # A string field given a non-string TOML value keeps the text the user typed (e.g. a run name "2024").
    return str(value).lower() if isinstance(value, bool) else str(value)


def from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "config") -> T:
    """Build the config dataclass ``cls`` from nested dicts; unknown keys and wrong types raise :class:`ConfigError`
    naming ``source`` and the valid keys. Values checked in ``__post_init__`` raise their own messages."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a table, got {data!r}")
    fields = _fields(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown keys {unknown} in {cls.__name__}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: [{name}] must be a table, got {value!r}")
            kwargs[name] = from_dict(hint, value, source=f"{source} [{name}]")
            continue
        try:
            kwargs[name] = _convert(value, hint)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{source}: {name}: {err}") from None
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {err}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as nested plain dicts (tuples become lists, paths strings; round-trips through
    :func:`from_dict`)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """``cls`` from a TOML file (or the defaults with ``path=None``) with dotted overrides applied."""
    data = read_toml(path) if path is not None else {}
    merged = apply_overrides(data, overrides, schema=cls, source=str(path) if path is not None else None)
    source = str(path) if path is not None else "defaults"
    return from_dict(cls, merged, source=f"{source} + overrides" if overrides else source)


class RunConfig:
    """Base of a run's top-level config dataclass (sections as fields): dict round trip, overrides, and the split of
    the global ``data.batch_size`` over the workers."""

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (round-trips through :meth:`from_dict`)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> Any:
        """Build from nested dicts; unknown sections/keys raise :class:`ConfigError` listing the valid names."""
        return from_dict(cls, data, source=source)

    def with_overrides(self, overrides: Sequence[str]) -> Any:
        """A copy with dotted overrides applied (``run.out_dir=/x``)."""
        return from_dict(type(self), apply_overrides(self.to_dict(), overrides, schema=type(self)), source="overrides")

    def replace(self, **sections: Any) -> Any:
        """A copy with whole sections replaced."""
        return dataclasses.replace(self, **sections)

    def per_worker_batch(self, world_size: int) -> int:
        """``data.batch_size / world_size``; ValueError when the global batch cannot be split evenly."""
        batch = self.data.batch_size  # type: ignore[attr-defined]
        if batch % world_size:
            raise ValueError(
                f"data.batch_size={batch} (the global batch) cannot be split over {world_size} workers; "
                f"use a multiple of {world_size} or another ray.num_workers"
            )
        return batch // world_size
