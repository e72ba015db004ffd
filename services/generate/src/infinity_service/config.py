"""Service configuration: one frozen dataclass, loaded from TOML with dotted ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["API_KEYS_ENV", "NATIVE", "Limits", "ServiceConfig", "load_service_config"]

API_KEYS_ENV = "INFINITY_SERVICE_API_KEYS"
NATIVE = "native"
RESOLUTION_NAMES = (NATIVE, "0.06M", "0.25M", "0.60M", "1M")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Per-request limits; requests beyond them get a 4xx that names the limit."""

    max_body_bytes: int = 64 * 1024
    max_edit_body_bytes: int = 4 * 1024 * 1024
    """Body limit of ``POST /v1/edits`` (base64 PNG/JPEG image and mask in JSON)."""
    max_edit_pixels: int = 512 * 512
    """Largest image (or out-painting canvas) an edit may have, in pixels; checked from the file header before
    decoding, so a decompression bomb is refused without being expanded."""
    max_prompt_chars: int = 1000
    max_prompts: int = 8
    max_count: int = 4
    max_images_per_request: int = 8
    cfg_range: tuple[float, float] = (0.0, 20.0)
    tau_range: tuple[float, float] = (0.05, 5.0)
    resolutions: tuple[str, ...] = (NATIVE, "0.06M", "0.25M")
    """Resolutions a client may ask for (bigger ones are slow on CPU; add "1M" on a GPU). "native" is the model's own
    image size (``image_size`` in its pipeline.json, e.g. 64x64 for the demo model), offered when the model has one."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_edit_body_bytes", "max_edit_pixels", "max_prompt_chars", "max_prompts",
                     "max_count", "max_images_per_request"):
            if getattr(self, name) < 1:
                raise ValueError(f"limits.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("cfg_range", "tau_range"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"limits.{name} must be [low, high] with low <= high, got {[lo, hi]}")
            object.__setattr__(self, name, (float(lo), float(hi)))
        unknown = [r for r in self.resolutions if r not in RESOLUTION_NAMES]
        if unknown or not self.resolutions:
            raise ValueError(
                f"limits.resolutions must be a non-empty subset of {list(RESOLUTION_NAMES)}, got {self.resolutions}"
            )
        object.__setattr__(self, "resolutions", tuple(self.resolutions))


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """Everything the generation service needs.

    Attributes:
        model_dir: Pipeline directory (``InfinityPipeline.save_pretrained`` layout); ``None`` = the packaged demo model.
        model_name: Name reported by ``/v1/models`` (default: the directory name).
        device: Torch device of the pipeline.
        host, port: Where to listen. Loopback unless told otherwise.
        api_keys: Accepted keys (``Authorization: Bearer <key>`` or ``X-API-Key``); empty = no auth. Keys are also
            read from ``$INFINITY_SERVICE_API_KEYS`` (comma-separated) so they need not live in a file.
        max_batch_size: Images generated in one pipeline call (requests with the same schedule are batched).
        batch_wait_ms: How long the first item of a batch waits for companions.
        max_queue: Images waiting or running; a request that would exceed it gets 503 + Retry-After.
        retry_after_s: The Retry-After value sent with 503.
        reproducible: Keep every image equal to the pipeline called alone with its seed. ``InfinityPipeline`` takes
            one generator per image, so requests are batched either way; for a pipeline that takes one generator per
            call, ``True`` generates image by image and ``False`` batches with one shared generator (higher
            throughput, images then depend on their batch companions).
        gallery_size: Recent results kept for the web page's gallery.
        limits: Request limits.
    """

    model_dir: str | None = None
    model_name: str | None = None
    device: str = "cpu"
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    max_batch_size: int = 4
    batch_wait_ms: float = 10.0
    max_queue: int = 32
    retry_after_s: int = 2
    reproducible: bool = True
    gallery_size: int = 24
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535 (0 = pick a free one), got {self.port}")
        if self.max_batch_size < 1 or self.max_queue < 1:
            raise ValueError(f"max_batch_size and max_queue must be >= 1, got {self.max_batch_size}, {self.max_queue}")
        if self.batch_wait_ms < 0 or self.retry_after_s < 0 or self.gallery_size < 0:
            raise ValueError("batch_wait_ms, retry_after_s and gallery_size must be >= 0")
        keys = tuple(k.strip() for k in self.api_keys if k.strip())
        if any(len(k) < 16 for k in keys):
            raise ValueError(
                "every API key must be at least 16 characters (use e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        object.__setattr__(self, "api_keys", keys)
        if isinstance(self.limits, dict):
            object.__setattr__(self, "limits", Limits(**self.limits))

    @property
    def is_loopback(self) -> bool:
        """Whether ``host`` only accepts connections from this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def resolved_api_keys(self) -> tuple[str, ...]:
        """Configured keys plus those in ``$INFINITY_SERVICE_API_KEYS``."""
        extra = tuple(k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip())
        return self.api_keys + extra


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # bare strings need no quotes on the command line


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {key!r}: {part!r} is not a table")
    node[parts[-1]] = value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown {where}key(s) {unknown}; valid keys: {sorted(names)}")
    kwargs = dict(data)
    if cls is ServiceConfig and "limits" in kwargs:
        if not isinstance(kwargs["limits"], dict):
            raise ValueError(f"'limits' must be a table of settings, got {kwargs['limits']!r}")
        kwargs["limits"] = _build(Limits, kwargs["limits"], "limits.")
    for name in ("api_keys", "resolutions", "cfg_range", "tau_range"):
        if name in kwargs and isinstance(kwargs[name], list):
            kwargs[name] = tuple(kwargs[name])
    hints = typing.get_type_hints(cls)
    for name, value in kwargs.items():
        expected = _SCALARS.get(hints[name])
        if expected is not None and (not isinstance(value, expected) or (bool not in expected and isinstance(value, bool))):
            raise ValueError(f"{where}{name} must be {_SCALAR_NAMES[hints[name]]}, got {value!r}")
    try:
        return cls(**kwargs)
    except TypeError as err:  # a value of the wrong shape (e.g. a string where a pair of numbers belongs)
        raise ValueError(f"invalid {where.rstrip('.') or 'service'} setting: {err}") from None


_SCALARS: dict[Any, tuple[type, ...]] = {int: (int,), float: (int, float), str: (str,), bool: (bool,),
                                         str | None: (str, type(None))}  # fmt: skip
_SCALAR_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                 str | None: "a string"}  # fmt: skip


def load_service_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ServiceConfig:
    """Read a TOML file (optional) and apply ``section.key=value`` overrides (values in TOML syntax)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"service config {path} is a directory; give a TOML file (see services/generate/configs/)")
        if not path.is_file():
            raise FileNotFoundError(f"service config {path} not found (see services/generate/configs/)")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"service config {path} is not valid TOML: {err}") from None
        data = data.get("service", data)
        if not isinstance(data, dict):
            raise ValueError(f"service config {path}: [service] must be a table of settings")
    for override in overrides:
        if "=" not in override:
            raise ValueError(f"override {override!r} must look like key=value, e.g. port=8080 or limits.max_count=2")
        key, value = override.split("=", 1)
        _set_dotted(data, key.strip(), _parse_value(value.strip()))
    return _build(ServiceConfig, data, "")
