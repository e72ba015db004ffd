"""The recipe runs from an installed wheel: its AR config is package data, found next to the installed module."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

CHECK = """
import sys
from pathlib import Path
import infinity_shapes.recipe as recipe
from bitwise_ar.train.config import load_config
from bitwise_ar.train.sources import source_names
target = Path(sys.argv[1]).resolve()
assert recipe.DEMO_CONFIG.is_relative_to(target), recipe.DEMO_CONFIG
config = load_config(recipe.DEMO_CONFIG, ["train.steps=3"])
assert config.data.source == "shapes" and config.data.options == {"ordered": True, "rows": True}
assert config.train.steps == 3 and source_names()["shapes"] == "infinity-shapes"
print("ok", recipe.DEMO_CONFIG)
"""


@pytest.mark.skipif(shutil.which("uv") is None, reason="needs the uv command to build the wheel")
def test_the_wheel_ships_the_recipe_config_and_the_recipe_finds_it_installed(tmp_path):
    dist, target = tmp_path / "dist", tmp_path / "site"
    subprocess.run(["uv", "build", "--package", "infinity-shapes", "--wheel", "-o", str(dist), "--offline", "--quiet"],
                   cwd=ROOT, check=True)  # fmt: skip
    (wheel,) = dist.glob("infinity_shapes-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n) for n in names if n.endswith(".dist-info/entry_points.txt")).decode()
    assert "infinity_shapes/configs/shapes_demo.toml" in names and "infinity_shapes/recipe.py" in names
    assert "[bitwise_ar.data_sources]" in entry_points and "shapes = infinity_shapes.source:shapes_source" in entry_points
    # Install it on its own (dependencies come from this environment) and load the config from there, not the checkout.
    subprocess.run(["uv", "pip", "install", "--no-deps", "--offline", "--quiet", "--target", str(target), str(wheel)],
                   cwd=ROOT, check=True)  # fmt: skip
    out = subprocess.run([sys.executable, "-c", CHECK, str(target)], env={"PYTHONPATH": str(target), "PATH": ""},
                         capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok " + str(target.resolve()))
