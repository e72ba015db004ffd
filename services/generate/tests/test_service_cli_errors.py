"""Bad inputs to ``infinity-service``: one line on stderr naming the file or setting, exit 2, no traceback (``-v``
adds it). Every case fails before the server starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from infinity_service.cli import main


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _broken_model(tmp: Path) -> Path:
    """A folder shaped like a pipeline whose files are garbage."""
    for sub in ("transformer", "tokenizer", "text_encoder"):
        _write(tmp / "model" / sub / "config.json", "{not json")
        _write(tmp / "model" / sub / "model.safetensors", b"\x00garbage")
    _write(tmp / "model" / "pipeline.json", "{not json")
    return tmp / "model"


# name: (argv builder, texts the one error line must contain)
BAD = {
    "missing-config": (lambda t: ["--config", str(t / "nope.toml")], ["nope.toml", "not found"]),
    "config-is-a-folder": (lambda t: ["--config", str(t)], ["is not a file"]),
    "corrupt-config": (lambda t: ["--config", str(_write(t / "bad.toml", "port = \n"))], ["bad.toml", "TOML"]),
    "binary-config": (lambda t: ["--config", str(_write(t / "bin.toml", b"\xff\xfe\x00"))], ["bin.toml", "TOML"]),
    "service-not-a-table": (lambda t: ["--config", str(_write(t / "s.toml", "service = 3\n"))], ["s.toml", "service"]),
    "flat-file": (lambda t: ["--config", str(_write(t / "f.toml", "port = 1\n"))], ["f.toml", "unknown keys ['port']"]),
    "bad-override-syntax": (lambda t: ["service.port"], ["'service.port'", "section.key=value"]),
    "override-without-table": (lambda t: ["port=1"], ["'port=1'", "unknown key 'port'", "['service']"]),
    "unknown-key": (lambda t: ["service.prot=1"], ["'service.prot=1'", "unknown key 'prot'"]),
    "wrong-type": (lambda t: ["service.port=abc"], ["'service.port=abc'", "expected an integer", "'abc'"]),
    "wrong-type-in-limits": (lambda t: ["service.limits.max_count=many"], ["'service.limits.max_count=many'", "integer"]),
    "limits-not-a-table": (lambda t: ["service.limits=3"], ["'service.limits=3'", "expected a table"]),
    "override-into-a-value": (lambda t: ["service.port.x=1"], ["'port' is not a table"]),
    "bad-range": (lambda t: ["service.limits.cfg_range=[5, 1]"], ["limits.cfg_range"]),
    "model-dir-missing": (lambda t: [f"service.model_dir={t / 'gone'}"], ["gone", "not found"]),
    "model-dir-is-a-file": (lambda t: [f"service.model_dir={_write(t / 'm.bin', 'x')}"], ["m.bin"]),
    "model-dir-corrupt": (lambda t: [f"service.model_dir={_broken_model(t)}"], ["error: "]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    build, needles = BAD[case]
    argv = build(tmp_path)
    capsys.readouterr()
    # port 0 and a missing model first: a case that got past its error would fail on the model, never serve
    assert main(["service.port=0", f"service.model_dir={tmp_path / 'never'}", *argv]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("infinity-service: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_overrides_after_an_option_are_applied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the model_dir override after --log-level is read (before the fix argparse rejected it as unrecognized)
    assert main(["service.port=0", "--log-level", "warning", f"service.model_dir={tmp_path / 'gone'}"]) == 2
    assert str(tmp_path / "gone") in capsys.readouterr().err


def test_child_process_one_line_and_verbose_traceback(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "infinity_service.cli", f"service.model_dir={_broken_model(tmp_path)}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("infinity-service: error:")]
    assert len(errors) == 1, done.stderr
    done = subprocess.run([*argv, "-v"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" in done.stderr
