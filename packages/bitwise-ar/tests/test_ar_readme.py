"""The README's runnable examples: every python block, and the CLI lines that use the tiny model, in a temp dir."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from bitwise_ar.cli import main
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    python_blocks = _blocks("python")
    assert len(python_blocks) >= 2
    namespace: dict = {}
    for block in python_blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert Image.open(tmp_path / "tiny.png").size == (128, 128)
    commands = [line for block in _blocks("bash") for line in block.splitlines() if line.startswith("bitwise-ar generate")]
    tiny = [c for c in commands if "tiny_model" in c]
    assert tiny, "the README should show the CLI on the tiny model"
    for command in tiny:
        assert main(shlex.split(command)[1:]) == 0
    assert Image.open(tmp_path / "out.png").mode == "RGB" and (tmp_path / "strip.png").is_file()
    assert Image.open(tmp_path / "tiled.png").size == (128, 128)  # --vae-tile 6 on an 8 x 8 latent
    assert Image.open(tmp_path / "lora.png").size == Image.open(tmp_path / "lora_cli.png").size == (64, 64)
    edits = [line for block in _blocks("bash") for line in block.splitlines() if line.startswith("bitwise-ar edit")]
    assert edits, "the README should show the edit command on the tiny model"
    for command in edits:
        assert main(shlex.split(command)[1:]) == 0
    assert Image.open(tmp_path / "edited.png").size == (128, 128) and (tmp_path / "edit_strip.png").is_file()
    assert Image.open(tmp_path / "wide.png").size == (256, 128)
