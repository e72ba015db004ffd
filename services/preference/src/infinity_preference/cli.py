"""``infinity-preference``: serve the study website, or run the operator's steps from the shell.

infinity-preference serve [--db URL] [--port N] [--config FILE] [key=value ...]
infinity-preference create-study --name NAME RUN RUN [...]     # RUN = [LABEL=]EVAL_RUN_FOLDER
infinity-preference invite --study ID NAME [...]
infinity-preference results --study ID [--mlflow]
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import sys
from typing import Any

from sqlalchemy.engine import make_url

from .config import ADMIN_TOKEN_ENV, PreferenceConfig, load_preference_config
from .db import make_engine
from .report import log_results
from .runs import parse_run_spec
from .study import StudyError, StudyStore

__all__ = ["main"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="TOML config, e.g. services/preference/configs/local.toml")
    parser.add_argument("--db", default=None, help="SQLAlchemy URL: sqlite:///FILE (default under --data-dir) or "
                        "postgresql+psycopg://USER:PASS@HOST/DB")  # fmt: skip
    parser.add_argument("--data-dir", default=None, help="folder of the embedded SQLite database")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. ratings_per_pair=2 tracking.experiment=x")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infinity-preference", description="Double-blind human preference study of text-to-image models."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the operator page (/admin) and the raters' pages (/rate/TOKEN)")
    _common(serve)
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    create = commands.add_parser("create-study", help="a study from two or more infinity-eval runs")
    _common(create)
    create.add_argument("--name", required=True)
    create.add_argument("--benchmark", default=None, help="when the runs hold several benchmarks")
    create.add_argument("--run", action="append", required=True, dest="runs",
                        help="[LABEL=]EVAL_RUN_FOLDER; give two or more")  # fmt: skip
    invite = commands.add_parser("invite", help="new raters with their private links")
    _common(invite)
    invite.add_argument("--study", type=int, required=True)
    invite.add_argument("--rater", action="append", required=True, dest="raters", help="a rater's name; repeat")
    results = commands.add_parser("results", help="win/tie/loss with CIs and rater agreement, as JSON")
    _common(results)
    results.add_argument("--study", type=int, required=True)
    results.add_argument("--mlflow", action="store_true", help="also log them to MLflow (needs the mlflow extra)")
    return parser


def _config(args: argparse.Namespace) -> PreferenceConfig:
    overrides = list(args.overrides)
    for flag, key in (("db", "db"), ("data_dir", "data_dir"), ("host", "host"), ("port", "port")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    return load_preference_config(args.config, overrides)


def _store(config: PreferenceConfig) -> StudyStore:
    return StudyStore(make_engine(config.database_url), ratings_per_pair=config.ratings_per_pair,
                      assignment_ttl_s=config.assignment_ttl_s, bootstrap_samples=config.bootstrap_samples)  # fmt: skip


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    """Parse, build the config, run one command; errors print one line and exit 2."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "info").upper(), format="%(message)s")
    try:
        config = _config(args)
        if args.command == "serve":
            return _serve(config, args.log_level)
        store = _store(config)
        if args.command == "create-study":
            _print(store.create_study(args.name, [parse_run_spec(r) for r in args.runs], benchmark=args.benchmark))
        elif args.command == "invite":
            _print(store.invite(args.study, args.raters))
        else:
            results = store.results(args.study)
            if args.mlflow:
                results["mlflow_run_id"] = log_results(results, config.tracking, config.data_dir)
            _print(results)
    except KeyboardInterrupt:
        pass
    except (StudyError, FileNotFoundError, ValueError, ImportError, OSError) as err:
        if args.verbose:
            logging.getLogger(__name__).exception("infinity-preference failed")
        message = (
            str(err) if not isinstance(err, OSError) or err.filename is None else f"{err.filename}: {err.strerror}"
        )
        print(f"infinity-preference: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    return 0


def _serve(config: PreferenceConfig, log_level: str) -> int:
    import uvicorn

    from .app import create_app

    token = config.resolved_admin_token()
    if not token:
        token = secrets.token_urlsafe(24)
        print(f"infinity-preference: no admin token configured (${ADMIN_TOKEN_ENV}); this run's token: {token}",
              file=sys.stderr)  # fmt: skip
    store = _store(config)
    app = create_app(config, store, admin_token=token)
    shown = make_url(config.database_url).render_as_string(hide_password=True)
    print(f"infinity-preference: http://{config.host}:{config.port}/admin (database {shown})", file=sys.stderr)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM; exit 0 either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level,
                                  access_log=False)).run()  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
