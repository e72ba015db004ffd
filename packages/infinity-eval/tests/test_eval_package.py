"""Package hygiene: light imports, CLI help, the shipped run configs and suites parse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from infinity_eval.cli import main
from infinity_eval.suites import SUITES, build_run_config, load_run_config

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "eval"


def test_import_and_help_pull_in_no_heavy_dependencies() -> None:
    code = ("import sys, infinity_eval, infinity_eval.cli\n"
            "heavy = [m for m in ('torch', 'transformers', 'mlflow', 'ray', 'scipy') if m in sys.modules]\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.glob("*.toml") if p.stem != "tiny-suite"), ids=lambda p: p.stem)
def test_shipped_run_configs_parse(path: Path) -> None:
    cfg = load_run_config(path, ["run.seed=3", "generation.sampling.cfg=2.5"])
    assert cfg.seed == 3 and cfg.suite.benchmarks
    assert cfg.generation["sampling"]["cfg"] == 2.5
    if cfg.suite.name == "infinity-paper":
        assert [b.name for b in cfg.suite.benchmarks] == ["geneval", "imagereward", "hpsv21"]
        assert cfg.suite.benchmarks[2].prompts == "hpsv21:data/hpdv2_benchmark"


def test_builtin_suites_match_the_protocols() -> None:
    sizes = {b.name: (b.expected_prompts, b.images_per_prompt) for s in SUITES.values() for b in s.benchmarks}
    assert sizes["geneval"] == (553, 4) and sizes["imagereward"] == (100, 10) and sizes["hpsv21"] == (3200, 1)
    with pytest.raises(ValueError, match="hps_prompts"):
        build_run_config({"run": {"suite": "hpsv21", "out": "x", "model": "m"}})
    with pytest.raises(ValueError, match=r"unknown keys \['wokers'\] in RunSection"):
        build_run_config({"run": {"suite": "geneval", "out": "x", "model": "m", "wokers": 2}})
