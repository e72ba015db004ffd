"""`infinity-mlflow-server` on bad inputs: one line naming the setting, a non-zero exit, no traceback, no server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CASES = [
    (["--root", "{tmp}/afile/data"], "a part of that path is a file"),
    (["--port", "99999"], "port must be in 1..65535"),
    (["--port", "abc"], "invalid int value: 'abc'"),
    (["--workers", "0"], "workers must be >= 1"),
    (["--backend-store-uri", "nonsense://x"], "backend_store_uri must be a SQLAlchemy URI"),
    (["--backend-store-uri", "mlflow.db"], "backend_store_uri must be a SQLAlchemy URI"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_bad_input_is_one_line_without_a_traceback(tmp_path, argv, message):
    (tmp_path / "afile").write_text("x")
    script = str(Path(sys.executable).parent / "infinity-mlflow-server")
    args = [a.format(tmp=tmp_path) for a in argv]
    proc = subprocess.run([script, *args, "--timeout", "20"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("infinity-mlflow-server")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
