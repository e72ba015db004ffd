"""The database: SQLAlchemy tables and the engine (SQLite file by default, any SQLAlchemy URL such as PostgreSQL).

What makes votes idempotent and durable lives here: ``UNIQUE(pair_id, rater_id, criterion)`` on votes (a vote
submitted twice is one row), ``UNIQUE(pair_id, rater_id)`` on assignments, and SQLite opened with a write-ahead log and
``synchronous=FULL`` so a committed transaction survives a killed process (a vote is acknowledged only after commit).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Assignment",
    "Base",
    "Image",
    "Pair",
    "Prompt",
    "Rater",
    "Study",
    "StudyModel",
    "Vote",
    "make_engine",
    "utcnow",
]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    benchmark: Mapped[str] = mapped_column(String(200))
    global_seed: Mapped[str] = mapped_column(String(100))
    secret: Mapped[str] = mapped_column(String(100))  # keys the per-rater order and sides; never served
    ratings_per_pair: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class StudyModel(Base):
    __tablename__ = "study_models"
    __table_args__ = (UniqueConstraint("study_id", "position"), UniqueConstraint("study_id", "label"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(200))
    run_dir: Mapped[str] = mapped_column(Text)


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("study_id", "prompt_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    prompt_id: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(200), default="")


class Image(Base):
    __tablename__ = "images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    model_position: Mapped[int] = mapped_column(Integer)
    prompt_row: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    sample_index: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)


class Pair(Base):
    """Two models' images of one (prompt, sample) slot; ``model_a`` < ``model_b`` (positions)."""

    __tablename__ = "pairs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    prompt_row: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    sample_index: Mapped[int] = mapped_column(Integer)
    model_a: Mapped[int] = mapped_column(Integer)
    model_b: Mapped[int] = mapped_column(Integer)
    image_a: Mapped[int] = mapped_column(ForeignKey("images.id"))
    image_b: Mapped[int] = mapped_column(ForeignKey("images.id"))
    needed: Mapped[int] = mapped_column(Integer)  # raters wanted: ratings_per_pair, one more after a disagreement


class Rater(Base):
    __tablename__ = "raters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the token; the token is not stored
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Assignment(Base):
    """A pair handed to a rater, with the rater's random side and the opaque keys of its two images."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("pair_id", "rater_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), index=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"), index=True)
    left_is_a: Mapped[bool] = mapped_column(Boolean)
    left_key: Mapped[str] = mapped_column(String(64), unique=True)
    right_key: Mapped[str] = mapped_column(String(64), unique=True)
    assigned_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("pair_id", "rater_id", "criterion"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), index=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), index=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    criterion: Mapped[str] = mapped_column(String(32))
    choice: Mapped[str] = mapped_column(String(8))  # "a", "b" or "tie" (model order, not screen side)
    client_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the tables created; SQLite files get WAL + synchronous=FULL + a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
    else:
        try:
            engine = create_engine(url, pool_pre_ping=True)
        except ImportError as err:  # e.g. postgresql+psycopg without psycopg
            raise ImportError(
                f"no driver for {parsed.drivername} ({err}); for PostgreSQL: "
                "pip install 'infinity-preference[postgres]' and a postgresql+psycopg:// URL"
            ) from err
    Base.metadata.create_all(engine)
    return engine
