"""Bad inputs to the ``infinity-eval`` CLI: one line on stderr naming the file (and line), exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from infinity_eval.cli import main


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _suite(tmp: Path, prompts: Path | str) -> Path:
    return _write(tmp / "suite.toml", f'name = "t"\n[[benchmarks]]\nname = "b"\nprompts = "{prompts}"\n'
                                      'images_per_prompt = 1\nmetrics = ["shapes"]\n')  # fmt: skip


def _run(tmp: Path, prompts: Path | str, *extra: str) -> list[str]:
    (tmp / "images").mkdir(exist_ok=True)
    return ["run", "--suite", str(_suite(tmp, prompts)), "--score-only", str(tmp / "images"), "--out",
            str(tmp / "out"), *extra]  # fmt: skip


GOOD_LINE = '{"id": "a", "prompt": "a red circle"}\n'

# name: (argv builder, texts the one error line must contain)
BAD = {
    "jsonl-unterminated-string": (
        lambda t: _run(t, _write(t / "p.jsonl", GOOD_LINE + "\n" + '{"prompt": "a blue\n' + GOOD_LINE)),
        ["p.jsonl:3:", "not valid JSON"],  # line 3 of the file (the blank line 2 counts)
    ),
    "jsonl-not-an-object": (lambda t: _run(t, _write(t / "p.jsonl", GOOD_LINE + "[1, 2]\n")), ["p.jsonl:2:", "'prompt'"]),
    "jsonl-prompt-not-text": (lambda t: _run(t, _write(t / "p.jsonl", '{"prompt": 5}\n')), ["p.jsonl:1:"]),
    "jsonl-deeply-nested": (lambda t: _run(t, _write(t / "p.jsonl", "[" * 100_000 + "\n")), ["p.jsonl:1:"]),
    "jsonl-not-utf8": (lambda t: _run(t, _write(t / "p.jsonl", b'{"prompt": "\xff\xfe"}\n')), ["p.jsonl", "UTF-8"]),
    "jsonl-empty": (lambda t: _run(t, _write(t / "p.jsonl", "")), ["p.jsonl", "is empty"]),
    "prompts-missing": (lambda t: _run(t, t / "gone.jsonl"), ["gone.jsonl"]),
    "prompts-is-a-folder": (lambda t: _run(t, t / "images"), ["images", "nor a file"]),
    "config-broken-toml": (lambda t: ["run", "--config", str(_write(t / "run.toml", "suite = \n"))], ["run.toml", "TOML"]),
    "config-missing": (lambda t: ["run", "--config", str(t / "nope.toml")], ["nope.toml"]),
    "config-not-utf8": (lambda t: ["run", "--config", str(_write(t / "bin.toml", b"\xff\x00"))], ["bin.toml"]),
    "config-unknown-key": (lambda t: ["run", "--config", str(_write(t / "run.toml", "sweet = 1\n"))], ["run.toml", "sweet"]),
    "config-unknown-run-key": (lambda t: ["run", "--config", str(_write(t / "run.toml", "[run]\nsweet = 1\n"))],
                               ["run.toml", "sweet"]),
    "suite-broken-toml": (lambda t: ["run", "--suite", str(_write(t / "s.toml", "[[benchmarks]\n")),
                          "--score-only", str(t), "--out", str(t / "o")], ["s.toml", "TOML"]),
    "suite-wrong-fields": (lambda t: ["run", "--suite", str(_write(t / "s.toml", '[[benchmarks]]\nname = "b"\n')),
                           "--score-only", str(t), "--out", str(t / "o")], ["s.toml"]),
    "bad-override": (lambda t: [*_run(t, t / "p.jsonl"), "--set", "run.limit"], ["run.limit", "section.key=value"]),
    "override-unknown-key": (lambda t: [*_run(t, t / "p.jsonl"), "--set", "run.limt=2"], ["'run.limt=2'", "unknown key"]),
    "override-wrong-type": (lambda t: [*_run(t, t / "p.jsonl"), "--set", "run.limit=two"], ["'run.limit=two'", "integer"]),
    "override-without-section": (lambda t: [*_run(t, t / "p.jsonl"), "--set", "limit=2"], ["'limit=2'", "unknown key"]),
    "out-under-a-file": (lambda t: [*_run(t, _write(t / "p.jsonl", GOOD_LINE))[:-2], "--out",
                                    f"{_write(t / 'file', 'x')}/out"], ["file/out"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_that_names_the_file(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    build, needles = BAD[case]
    argv = build(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("infinity-eval: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_malformed_jsonl_in_a_child_process_is_one_line_and_verbose_adds_the_traceback(tmp_path: Path) -> None:
    argv = _run(tmp_path, _write(tmp_path / "p.jsonl", GOOD_LINE + '{"prompt": "a\n'))
    done = subprocess.run([sys.executable, "-m", "infinity_eval.cli", *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "p.jsonl:2:" in done.stderr, done.stderr
    done = subprocess.run([sys.executable, "-m", "infinity_eval.cli", "-v", *argv], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 2 and "Traceback" in done.stderr
