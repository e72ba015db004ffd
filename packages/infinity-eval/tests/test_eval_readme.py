"""The README's examples, run as written (shell commands in-process through the CLI, Python blocks exec'd)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
REPO = Path(__file__).resolve().parents[3]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_blocks_run() -> None:
    blocks = _blocks("python")
    assert blocks
    for code in blocks:
        exec(compile(code, str(README), "exec"), {})


def test_readme_shell_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("bitwise_ar.pipeline", reason="the README run example generates with bitwise-ar")
    from infinity_eval.cli import main
    from infinity_eval.testing import write_demo_assets

    monkeypatch.chdir(REPO)  # the commands use repo-relative config paths
    codes = []
    for line in _blocks("bash")[0].strip().splitlines():
        args = shlex.split(line.replace("/tmp/ie-demo", str(tmp_path)))
        assert args[:2] == ["uv", "run"], line
        if args[2] == "python":
            assert args[3:5] == ["-m", "infinity_eval.testing"]
            write_demo_assets(args[-1])
            continue
        assert args[2] == "infinity-eval"
        codes.append(main([*args[3:], *(["--set", "run.progress=false"] if args[3] == "run" else [])]))
    assert codes == [0, 0, 0, 1]
    assert (tmp_path / "out" / "results.json").is_file() and (tmp_path / "rescored" / "results.json").is_file()


def test_readme_fetch_dpg_command_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The setup command as written, with the download pointed at a local copy (no network in tests)."""
    from infinity_eval.cli import main
    from infinity_eval.dpg import CSV_COLUMNS

    (line,) = [line for block in _blocks("bash") for line in block.splitlines() if "infinity-eval fetch-dpg" in line]
    args = shlex.split(line)
    assert args[:4] == ["uv", "run", "infinity-eval", "fetch-dpg"] and args[4].endswith("dpg_bench.csv")
    upstream = tmp_path / "upstream.csv"
    upstream.write_text(",".join(CSV_COLUMNS) + "\np1,a dog,,1,0,entity,entity - whole,entity - whole (dog),Is there a dog?\n")
    out = tmp_path / Path(args[4]).name
    assert main(["fetch-dpg", str(out), *args[5:], "--url", upstream.as_uri()]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"dpg_questions\t{out.resolve()}" and out.is_file()
