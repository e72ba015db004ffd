"""The workspace's import graph: no cycles, project imports at module top, layer contracts (tools/import_graph.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("import_graph", REPO / "tools" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
sys.modules["import_graph"] = import_graph  # dataclasses resolve their module while the class is built
_spec.loader.exec_module(import_graph)


def test_workspace_has_no_cycles_no_hidden_project_imports_and_keeps_its_contracts() -> None:
    result = import_graph.report(REPO)
    assert result["modules"] > 100  # the sources were found
    assert result["cycles_not_excluded"] == []
    assert result["unjustified_function_level_project_imports"] == []
    assert {name: bad for name, bad in result["contracts"].items() if bad} == {}


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_checker_finds_a_cycle_a_hidden_import_and_a_broken_contract(tmp_path: Path) -> None:
    src = "packages/bsq-tokenizer/src/bsq_tokenizer"
    _write(tmp_path, "packages/bsq-tokenizer/pyproject.toml", '[project]\nname = "bsq-tokenizer"\ndependencies = []\n')
    _write(tmp_path, f"{src}/__init__.py", "")
    _write(tmp_path, f"{src}/model.py", "from .bitfile import pack\n")
    _write(tmp_path, f"{src}/bitfile.py", "def pack():\n    from bsq_tokenizer.model import x\n")
    _write(tmp_path, f"{src}/cli.py", "def main():\n    from bsq_tokenizer import model\n")  # an entry point: allowed
    _write(tmp_path, f"{src}/config.py", "from infinity_run.config import load\n")
    _write(tmp_path, "packages/infinity-run/src/infinity_run/config.py", "import torch\n")
    result = import_graph.report(tmp_path)
    assert result["cycles"] == [["bsq_tokenizer.bitfile", "bsq_tokenizer.model"]]
    assert result["unjustified_function_level_project_imports"] == [
        "packages/bsq-tokenizer/src/bsq_tokenizer/bitfile.py:2 bsq_tokenizer.bitfile -> bsq_tokenizer.model"
    ]
    broken = {name: bad for name, bad in result["contracts"].items() if bad}
    assert list(broken.values()) == [
        ["packages/bsq-tokenizer/src/bsq_tokenizer/config.py:1 bsq_tokenizer.config -> infinity_run.config"]
    ]
    assert import_graph.main(["--repo", str(tmp_path)]) == 1


def test_an_import_that_defers_a_heavy_dependency_is_allowed(tmp_path: Path) -> None:
    src = "packages/infinity-data/src/infinity_data"
    _write(tmp_path, "packages/infinity-data/pyproject.toml", '[project]\nname = "infinity-data"\ndependencies = []\n')
    _write(tmp_path, f"{src}/__init__.py", "")
    _write(tmp_path, f"{src}/efficientnet.py", "import torch\n")
    _write(tmp_path, f"{src}/watermark.py", "def build():\n    from .efficientnet import Net\n")
    result = import_graph.report(tmp_path)
    assert list(result["function_level_project_imports"].values()) == ["defers torch"]
    assert import_graph.main(["--repo", str(tmp_path)]) == 0


def test_a_core_package_importing_the_demo_breaks_a_contract(tmp_path: Path) -> None:
    _write(tmp_path, "packages/infinity-shapes/src/infinity_shapes/__init__.py", "from bitwise_ar.train import sources\n")
    _write(tmp_path, "packages/bitwise-ar/src/bitwise_ar/train/__init__.py", "")
    _write(tmp_path, "packages/bitwise-ar/src/bitwise_ar/train/sources.py", "import infinity_shapes\n")
    result = import_graph.report(tmp_path)
    broken = {name: bad for name, bad in result["contracts"].items() if bad}
    (name,) = broken
    assert "imports the demo (infinity_shapes)" in name
    assert broken[name] == ["packages/bitwise-ar/src/bitwise_ar/train/sources.py:1 bitwise_ar.train.sources -> infinity_shapes"]
