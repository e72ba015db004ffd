"""Service configuration: one frozen dataclass read by ``infinity_run.config`` (TOML + dotted overrides)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infinity_run.config import TrackingSection, apply_overrides, from_dict, read_toml

__all__ = ["ADMIN_TOKEN_ENV", "CRITERIA", "PreferenceConfig", "load_preference_config"]

ADMIN_TOKEN_ENV = "INFINITY_PREFERENCE_ADMIN_TOKEN"
CRITERIA = ("overall", "prompt", "aesthetics")
"""The paper's three questions (§4): overall quality, prompt following, visual aesthetics."""
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True, kw_only=True)
class PreferenceConfig:
    """Everything the preference-study service needs.

    Attributes:
        db: SQLAlchemy URL of the database: ``sqlite:///FILE`` (embedded) or e.g.
            ``postgresql+psycopg://USER:PASS@HOST/DB`` (needs ``infinity-preference[postgres]``); "" =
            ``sqlite:///<data_dir>/preference.db``.
        data_dir: Folder of the embedded database.
        host, port: Where to listen (loopback unless told otherwise).
        admin_token: The operator's token (``Authorization: Bearer <token>``), at least 16 characters; "" = read
            ``$INFINITY_PREFERENCE_ADMIN_TOKEN`` (the CLI makes and prints one when neither is set).
        ratings_per_pair: Raters per pair before a disagreement asks for one more (paper: 2).
        assignment_ttl_s: A pair handed to a rater who has not answered after this long may go to another rater.
        bootstrap_samples: Bootstrap resamples of each confidence interval.
        max_body_bytes: Largest request body accepted.
        tracking: Where ``POST /api/admin/studies/{id}/mlflow`` logs results (``kind`` is ignored: always MLflow).
    """

    db: str = ""
    data_dir: str = "preference-data"
    host: str = "127.0.0.1"
    port: int = 8100
    admin_token: str = ""
    ratings_per_pair: int = 2
    assignment_ttl_s: float = 1800.0
    bootstrap_samples: int = 1000
    max_body_bytes: int = 64 * 1024
    tracking: TrackingSection = field(default_factory=lambda: TrackingSection(experiment="preference-study"))

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535 (0 = pick a free one), got {self.port}")
        if self.ratings_per_pair < 2:
            raise ValueError(f"ratings_per_pair must be >= 2 (agreement needs two raters), got {self.ratings_per_pair}")
        if self.assignment_ttl_s <= 0 or self.bootstrap_samples < 0 or self.max_body_bytes < 1024:
            raise ValueError("assignment_ttl_s must be > 0, bootstrap_samples >= 0 and max_body_bytes >= 1024")
        if self.admin_token and len(self.admin_token) < MIN_TOKEN_CHARS:
            raise ValueError(f"admin_token must be at least {MIN_TOKEN_CHARS} characters "
                             "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")  # fmt: skip

    @property
    def database_url(self) -> str:
        """``db``, or the embedded SQLite file under ``data_dir``."""
        return self.db or f"sqlite:///{Path(self.data_dir).resolve() / 'preference.db'}"

    def resolved_admin_token(self) -> str:
        """``admin_token``, else ``$INFINITY_PREFERENCE_ADMIN_TOKEN`` ("" when neither is set)."""
        token = self.admin_token or os.environ.get(ADMIN_TOKEN_ENV, "").strip()
        if token and len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"${ADMIN_TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} characters")
        return token


def load_preference_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> PreferenceConfig:
    """The config from a TOML file (its ``[preference]`` table, or the whole file) with dotted overrides."""
    data = read_toml(path, what="preference config") if path is not None else {}
    data = data.get("preference", data)
    source = str(path) if path is not None else "defaults"
    data = apply_overrides(data, overrides, schema=PreferenceConfig)
    return from_dict(PreferenceConfig, data, source=source + (" + overrides" if overrides else ""))
