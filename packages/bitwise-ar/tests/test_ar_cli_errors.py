"""`bitwise-ar` and `python -m bitwise_ar.train` on bad inputs: one line naming the file or setting, a non-zero exit,
no traceback (table-driven, real subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    (root / "bad.pth").write_text("not a checkpoint")
    (root / "empty.pth").write_bytes(b"")
    (root / "notpipe").mkdir()
    (root / "afile").write_text("x")
    (root / "bad.toml").write_text("[train\nsteps = 1\n")
    return root


CASES = [
    (["bitwise-ar", "generate", "x", "--weights", "{bad}/nowhere"], "nowhere not found"),
    (["bitwise-ar", "generate", "x", "--weights", "{bad}/notpipe"], "notpipe/transformer is missing"),
    (["bitwise-ar", "generate", "x", "-o", "{bad}/afile/out.png"], "cannot write"),
    (["bitwise-ar", "convert-official", "{bad}/missing.pth", "-o", "{bad}/o"], "missing.pth not found"),
    (["bitwise-ar", "convert-official", "{bad}/bad.pth", "-o", "{bad}/o"], "bad.pth is not a readable torch checkpoint"),
    (["bitwise-ar", "convert-official", "{bad}/empty.pth", "-o", "{bad}/o"], "empty.pth is not a readable torch checkpoint"),
    (["bitwise-ar", "export", "{bad}/nowhere", "-o", "{bad}/o"], "nowhere is not a complete checkpoint"),
    (["train", "{bad}/missing.toml"], "missing.toml not found"),
    (["train", "{bad}/bad.toml"], "bad.toml is not valid TOML"),
    (["train", "configs/train/debug.toml", "optim.lrr=1"], "unknown key 'lrr' in optim"),
    (["train", "configs/train/debug.toml", "train.steps=many"], "expected an integer"),
    (["train", "configs/train/debug.toml", "data.batch_size=3", "ray.num_workers=2", "--ray"], "cannot be split over 2"),
    (["train", "configs/train/debug.toml", "model.init_from={bad}/bad.pth", "run.out_dir={bad}/run"],
     "bad.pth is not a readable torch checkpoint"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[f"{c[0][0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_without_a_traceback(bad, argv, message):
    argv = [a.format(bad=bad) for a in argv]
    if argv[0] == "bitwise-ar":
        command = [str(Path(sys.executable).parent / "bitwise-ar"), *argv[1:]]
    else:
        command = [sys.executable, "-m", "bitwise_ar.train", *argv[1:]]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode != 0, proc.stdout[-1000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
