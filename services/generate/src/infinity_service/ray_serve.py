"""The same FastAPI app as a Ray Serve deployment (``serve.ingress``), for replicas across a Ray cluster.

Each replica builds the app with ``create_app(config)`` at start-up, so the app's lifespan loads the pipeline inside
the replica and stops its engine when the replica goes away; routes, limits, auth, batching and the web page are
exactly those of the standalone server. Three ways in:

* ``infinity-service --ray --config services/generate/configs/local.toml`` (a private local Ray instance, or
  ``--ray-address auto`` for a running cluster);
* ``serve run infinity_service.ray_serve:app_builder config=services/generate/configs/local.toml num_replicas=2``;
* :func:`build_application` from Python, then ``serve.run``.

Ray is imported only here (``pip install 'infinity-service[ray]'``).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from infinity_run.reaper import start_reaper

from .config import ServiceConfig, load_service_config

__all__ = ["app_builder", "build_application", "run_serve"]

logger = logging.getLogger(__name__)
DEPLOYMENT_NAME = "infinity-service"


def _import_serve() -> Any:
    try:
        from ray import serve
    except ImportError as err:
        raise ImportError(
            f"Ray Serve is not installed ({err}); install it with `pip install 'infinity-service[ray]'`"
        ) from None
    return serve


def build_application(
    config: ServiceConfig, *, num_replicas: int = 1, num_cpus: float = 1.0, num_gpus: float = 0.0
) -> Any:
    """A bound Serve application running ``create_app(config)`` in ``num_replicas`` replicas.

    Each replica holds one model and one engine, so ``max_ongoing_requests`` admits the engine's whole queue (plus
    head-room for health checks and the page): the engine, not Serve's router, answers 503 when it is full.
    """
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    if num_cpus < 0 or num_gpus < 0:
        raise ValueError(f"num_cpus and num_gpus must be >= 0, got {num_cpus}, {num_gpus}")
    if num_gpus == 0 and config.device.startswith("cuda"):
        raise ValueError(f"device={config.device!r} needs num_gpus > 0 per replica (e.g. --num-gpus 1)")
    serve = _import_serve()

    def build_app() -> Any:  # runs in the replica (pickled by value: absolute import)
        from infinity_service.app import create_app

        return create_app(config)

    ingress = serve.ingress(build_app)()
    deployment = serve.deployment(
        ingress,
        name=DEPLOYMENT_NAME,
        num_replicas=num_replicas,
        max_ongoing_requests=config.max_queue + 32,
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
        health_check_period_s=10,
    )
    return deployment.bind()


def app_builder(args: dict[str, str]) -> Any:
    """Entry for ``serve run infinity_service.ray_serve:app_builder config=PATH num_replicas=N key=value ...``.

    ``config`` is the service TOML; ``num_replicas``, ``num_cpus``, ``num_gpus`` size the deployment; every other
    ``key=value`` is a service-config override (``service.model_dir=DIR``, ``service.limits.max_count=2``, ...).
    """
    args = dict(args)
    path = args.pop("config", None)
    sizing = {name: float(args.pop(name)) for name in ("num_cpus", "num_gpus") if name in args}
    num_replicas = int(args.pop("num_replicas", 1))
    config = load_service_config(path, [f"{k}={v}" for k, v in args.items()])
    return build_application(config, num_replicas=num_replicas, **sizing)


def run_serve(
    config: ServiceConfig,
    *,
    address: str | None = None,
    num_replicas: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    blocking: bool = True,
) -> str:
    """Deploy on Ray Serve with its HTTP proxy on ``config.host:config.port``; return the base URL.

    ``address=None`` starts a private local Ray instance (never joins another cluster on this machine by accident);
    ``"auto"`` or ``"ray://..."`` connect to a running cluster. ``blocking`` serves until Ctrl-C, then shuts down
    the Serve application and the Ray instance this call started.
    """
    # Under `uv run`, Ray would package the working dir and start workers with `uv run`; use this interpreter
    # instead (read once, when Ray is first imported).
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    serve = _import_serve()
    import ray

    application = build_application(config, num_replicas=num_replicas, num_cpus=num_cpus, num_gpus=num_gpus)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address or "local", include_dashboard=False, configure_logging=False)
        start_reaper(address=address)  # a killed server leaves no Ray process behind
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(application, name=DEPLOYMENT_NAME, route_prefix="/", blocking=False)
    url = f"http://{config.host}:{config.port}"
    logger.info("Ray Serve: %s replica(s) of %s on %s", num_replicas, DEPLOYMENT_NAME, url)
    if not blocking:
        return url
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        if started_ray:
            ray.shutdown()
    return url
