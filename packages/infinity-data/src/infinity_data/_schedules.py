"""Access to ``bsq_tokenizer.schedules`` (the official aspect-ratio templates) without importing torch.

``import bsq_tokenizer.schedules`` first runs ``bsq_tokenizer/__init__.py``, which imports the tokenizer model and
therefore torch -- seconds of start-up in every Ray worker and CLI call of a job that only needs three small
functions. The module is pure Python, so we load that one file directly; if it is already imported (or anything
about the layout changes), the normal import is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["schedules"]

_NAME = "bsq_tokenizer.schedules"


def _load() -> ModuleType:
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    try:
        package = importlib.util.find_spec("bsq_tokenizer")
        locations = list(package.submodule_search_locations or []) if package else []
        path = Path(locations[0]) / "schedules.py" if locations else None
        if path is None or not path.is_file():
            raise ImportError(_NAME)
        spec = importlib.util.spec_from_file_location(_NAME, path)
        if spec is None or spec.loader is None:
            raise ImportError(_NAME)
        module = importlib.util.module_from_spec(spec)
        sys.modules[_NAME] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            del sys.modules[_NAME]
            raise
        return module
    except ImportError:
        return importlib.import_module(_NAME)


schedules = _load()
