"""infinity_service: HTTP generation service for Infinity (batched, back-pressured, streaming previews, web page)."""

from .config import Limits, ServiceConfig, load_service_config
from .engine import GenerationEngine, QueueFull
from .schema import ImageRequest, RequestError, parse_image_request

__all__ = [
    "GenerationEngine",
    "ImageRequest",
    "Limits",
    "QueueFull",
    "RequestError",
    "ServiceConfig",
    "load_service_config",
    "parse_image_request",
]
