"""The README's examples run: every ``python`` block, and every ``bash`` command on tiny models."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from bsq_tokenizer import PRESETS, BSQTokenizer
from bsq_tokenizer.cli import main
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(_blocks("python")) >= 3 and len(_blocks("bash")) >= 1


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(_blocks("python")[index], f"README.md[python {index}]", "exec"), {"__name__": "__readme__"})


def test_bash_commands_run(tmp_path, monkeypatch, capsys, official_like_model):
    """The same commands on tiny models: the official checkpoint name points at a tiny official-layout file."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = BSQTokenizer(PRESETS["debug"]).eval()
    model.save_pretrained("tokenizer_dir")
    torch.save({"vae": official_like_model.state_dict()}, "infinity_vae_d32reg.pth")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (128, 192, 3), dtype=np.uint8)).save("photo.png")
    commands = [line.split("#")[0].strip() for block in _blocks("bash") for line in block.splitlines()]
    commands = [c for c in commands if c]
    assert commands
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "bsq-tokenizer", command
        argv = [a for a in argv[1:]]
        if "--preset" in argv and "d32reg" in argv:  # the tiny stand-in is not the real d32reg architecture
            i = argv.index("--preset")
            del argv[i : i + 2]
        assert main(argv) == 0, (command, capsys.readouterr().err)
    assert Path("outputs/side_by_side.png").is_file() and Path("tokenizers/d32reg/model.safetensors").is_file()
