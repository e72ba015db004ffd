"""The runnable examples of docs/training.md (quick start: CLI and Python) work as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "training.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_quick_start_examples_run(tmp_path, monkeypatch):
    if not DOC.is_file():
        pytest.skip("docs/training.md is not part of this checkout")
    from bitwise_ar.train.__main__ import main

    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    command = next(line for block in _blocks("bash") for line in block.splitlines() if "-m bitwise_ar.train " in line)
    argv = [*shlex.split(command.split("-m bitwise_ar.train", 1)[1]), "data.image_size=32"]
    assert main(argv) == 0
    assert (tmp_path / "outputs" / "debug" / "checkpoints").is_dir()
    python = next(block for block in _blocks("python") if "ARTrainer" in block)
    namespace: dict = {}
    exec(compile(python, str(DOC), "exec"), namespace)
    assert namespace["trainer"].step == 2
    assert main(["configs/train/debug.toml", "optim.lrr=1"]) == 2  # a typo is one line on stderr, exit code 2
