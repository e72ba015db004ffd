"""`infinity-ray` on bad inputs: one line naming the file (and the line for YAML), a non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from infinity_ray import spec_dir

CASES = [
    (["submit", "{bad}/missing.yaml", "--dry-run"], "missing.yaml not found"),
    (["submit", "{bad}/broken.yaml", "--dry-run"], "broken.yaml:3: not valid YAML"),
    (["rayjob", "{bad}/broken.yaml"], "broken.yaml:3: not valid YAML"),
    (["submit", "{bad}/binary.yaml", "--dry-run"], "binary.yaml is not a UTF-8 text file"),
    (["submit", "{bad}/list.yaml", "--dry-run"], "must hold a mapping"),
    (["submit", "{bad}/unknown.yaml", "--dry-run"], "unknown keys ['entrypoint_cpus']"),
    (["submit", str(spec_dir() / "train.yaml"), "--dry-run", "notanoverride"], "must look like section.key=value"),
    (["submit", str(spec_dir() / "train.yaml"), "--dry-run", "--oops"], "unrecognized arguments: --oops"),
]


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    (root / "broken.yaml").write_text("name: x\nentrypoint: [python\n")
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00name")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "unknown.yaml").write_text("name: x\nentrypoint: python -m json.tool\nentrypoint_cpus: 1\n")
    return root


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_bad_input_is_one_line_without_a_traceback(bad, argv, message):
    script = str(Path(sys.executable).parent / "infinity-ray")
    proc = subprocess.run([script, *(a.format(bad=bad) for a in argv)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
