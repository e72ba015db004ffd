"""The README's runnable examples (bash and python blocks) work as written, with /tmp paths moved to tmp_path."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from infinity_data.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
REPO = Path(__file__).resolve().parents[3]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # configs/data/... paths are relative to the repository root
    bash = _blocks("bash")
    assert bash, "README has no ```bash block"
    for block in bash:
        for line in block.strip().splitlines():
            argv = shlex.split(line.replace("/tmp/", f"{tmp_path}/"))
            assert argv[0] == "infinity-data"
            assert main([*argv[1:], "--quiet"] if argv[1] == "curate" else argv[1:]) == 0, capsys.readouterr().err
    assert "in 3" in capsys.readouterr().out or (tmp_path / "demo_out" / "report" / "report.md").is_file()
    report = (tmp_path / "demo_out" / "report" / "report.md").read_text()
    assert "balanced" in report and "ocr" in report
    for block in _blocks("python"):
        exec(compile(block.replace("/tmp/", f"{tmp_path}/"), str(README), "exec"), {})
