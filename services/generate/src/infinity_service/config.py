"""Service configuration: frozen dataclasses read from the ``[service]`` table of a TOML file, changed by
``service.key=value`` overrides (:mod:`infinity_run.config`: the same syntax and meaning as every other CLI)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infinity_run.config import RunConfig, load_config

__all__ = ["API_KEYS_ENV", "NATIVE", "Limits", "ServiceConfig", "ServiceFile", "load_service_config"]

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


@dataclass(frozen=True, kw_only=True)
class ServiceFile(RunConfig):
    """A service config file: its ``[service]`` table (and ``[service.limits]``)."""

    service: ServiceConfig = field(default_factory=ServiceConfig)


def load_service_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ServiceConfig:
    """Read a TOML file (optional; its ``[service]`` table) and apply ``service.key=value`` overrides."""
    return load_config(ServiceFile, path, overrides).service
