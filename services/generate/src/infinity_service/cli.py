"""``infinity-service``: start the generation service (uvicorn, or Ray Serve with ``--ray``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from infinity_run.entry import parse_with_overrides

from .config import load_service_config


def main(argv: list[str] | None = None) -> int:
    """Parse, build the config, serve until interrupted; errors print one line and exit 2."""
    parser = argparse.ArgumentParser(
        prog="infinity-service",
        description="Infinity text-to-image HTTP service with a web page (http://HOST:PORT/).",
    )
    parser.add_argument("--config", default=None, help="TOML config, e.g. services/generate/configs/local.toml")
    parser.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. service.port=8080 service.model_dir=DIR service.limits.max_count=2"
    )
    parser.add_argument("--ray", action="store_true", help="serve under Ray Serve (needs infinity-service[ray])")
    parser.add_argument(
        "--ray-address",
        default=None,
        help="with --ray: 'auto' or ray://HOST:PORT joins a cluster (default: a private local Ray)",
    )
    parser.add_argument("--num-replicas", type=int, default=1, help="with --ray: model replicas")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="with --ray: GPUs per replica")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("-v", "--verbose", action="store_true", help="print the traceback of a start-up error")
    args = parse_with_overrides(parser, argv)  # overrides before or after the options
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s")
    try:
        config = load_service_config(args.config, args.overrides)
        if not config.is_loopback:
            logging.getLogger(__name__).warning(
                "listening on %s: reachable from other machines%s", config.host,
                "" if config.resolved_api_keys() else " WITHOUT an API key (set INFINITY_SERVICE_API_KEYS)",
            )  # fmt: skip
        if args.ray:
            from .ray_serve import run_serve

            print(f"infinity-service: Ray Serve on http://{config.host}:{config.port}/", file=sys.stderr)
            run_serve(config, address=args.ray_address, num_replicas=args.num_replicas, num_gpus=args.num_gpus)
            return 0
        from .app import create_app, load_engine
        from .server import serve_forever

        engine = load_engine(config)
        print(f"infinity-service: serving {engine.model_name} on http://{config.host}:{config.port}/", file=sys.stderr)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: end with exit code 0.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            serve_forever(create_app(config, engine), config.host, config.port, args.log_level)
        finally:
            engine.stop()
    except KeyboardInterrupt:
        pass
    except Exception as err:  # one line, no traceback unless -v: the message names the file or setting to fix
        if args.verbose:
            logging.getLogger(__name__).exception("infinity-service failed to start")
        print(f"infinity-service: error: {_describe(err)}", file=sys.stderr)
        return 2
    return 0


def _describe(err: BaseException) -> str:
    if isinstance(err, FileNotFoundError | ValueError | ImportError):
        message = str(err)
    elif isinstance(err, OSError) and err.filename is not None:
        message = f"{err.filename}: {err.strerror or type(err).__name__}"
    else:  # e.g. a model directory whose files are not a pipeline
        message = f"{type(err).__name__}: {err} (run with -v for the traceback)"
    return " ".join(message.split())


if __name__ == "__main__":
    sys.exit(main())
