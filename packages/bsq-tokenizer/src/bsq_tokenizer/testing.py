"""Helpers for tests that read the project's shared reference material.

The official parity fixtures live in ``../shared/fixtures/official`` next to a checkout of this repository, plus
any directory named by the ``INFINITY_OFFICIAL_FIXTURES`` environment variable. ``INFINITY_SHARED_DIR`` overrides
where ``shared`` is looked for. A user's clone has no ``shared`` directory; tests then skip with a clear reason.
"""

from __future__ import annotations

import os
from pathlib import Path

FIXTURE_ENV = "INFINITY_OFFICIAL_FIXTURES"
SHARED_ENV = "INFINITY_SHARED_DIR"


def find_shared_dir(start: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the ``shared`` reference directory, or ``None`` if there is none.

    Looks at ``$INFINITY_SHARED_DIR`` first, then for a ``shared`` sibling of ``start`` (default: the current
    directory) or of any of its parents.
    """
    env = os.environ.get(SHARED_ENV)
    if env:
        path = Path(env)
        return path if path.is_dir() else None
    here = Path(start or Path.cwd()).resolve()
    for parent in [here, *here.parents]:
        candidate = parent.parent / "shared"
        if (candidate / "fixtures").is_dir() or (candidate / "data").is_dir():
            return candidate
    return None


def official_fixture_paths(kind: str, start: str | os.PathLike[str] | None = None) -> list[Path]:
    """All official fixture files of ``kind`` (``"bsq_vae"`` or ``"infinity"``), from shared/ and $INFINITY_OFFICIAL_FIXTURES.

    The kind is read from the file itself (the ``kind`` entry), so new fixtures are picked up without code changes.
    """
    import torch

    dirs: list[Path] = []
    shared = find_shared_dir(start)
    if shared is not None and (shared / "fixtures" / "official").is_dir():
        dirs.append(shared / "fixtures" / "official")
    extra = os.environ.get(FIXTURE_ENV)
    if extra:
        if not Path(extra).is_dir():
            raise FileNotFoundError(f"${FIXTURE_ENV} points at {extra!r}, which is not a directory")
        dirs.append(Path(extra))
    found: list[Path] = []
    seen: set[Path] = set()
    for directory in dirs:
        for path in sorted(directory.glob("*.pt")):
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            fixture = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(fixture, dict) and fixture.get("kind") == kind:
                found.append(path)
    return found


def toy_data_dir(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The official 10-image toy dataset (``shared/data/infinity_toy_data``), or ``None`` if absent."""
    shared = find_shared_dir(start)
    if shared is None:
        return None
    path = shared / "data" / "infinity_toy_data"
    return path if path.is_dir() else None
