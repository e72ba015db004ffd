"""Build the wheel, install it into a fresh virtual environment, and run a round trip there."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE_ROOT = PACKAGE_ROOT.parents[1]

SCRIPT = r"""
import sys, tempfile, torch, numpy as np
import bsq_tokenizer
from bsq_tokenizer import PRESETS, BSQTokenizer
from bsq_tokenizer.cli import main
assert "/site-packages/" in bsq_tokenizer.__file__, bsq_tokenizer.__file__
torch.manual_seed(0)
tok = BSQTokenizer(PRESETS["debug"]).eval()
x = torch.rand(1, 3, 40, 72) * 2 - 1
codes = tok.encode(x)
back = codes.unpack(codes.pack())
assert all(torch.equal(a, b) for a, b in zip(codes.bits, back.bits))
y = tok.decode(back)
assert y.shape == x.shape
with tempfile.TemporaryDirectory() as d:
    tok.save_pretrained(d)
    again = BSQTokenizer.from_pretrained(d)
    assert torch.equal(again.decode(back), y)
    from PIL import Image
    Image.fromarray((np.random.default_rng(0).random((40, 72, 3)) * 255).astype("uint8")).save(d + "/p.png")
    assert main(["reconstruct", d + "/p.png", "--weights", d, "-o", d + "/r.png"]) == 0
print("WHEEL-OK", bsq_tokenizer.__version__)
"""


def _uv(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["uv", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_wheel_installs_and_round_trips_in_fresh_venv(tmp_path):
    if shutil.which("uv") is None:
        pytest.skip("uv is not on PATH")
    dist = tmp_path / "dist"
    # bsq-tokenizer's one project dependency, the standard-library-only infinity-scales, is built next to it
    for package in ("bsq-tokenizer", "infinity-scales"):
        proc = _uv("build", "--package", package, "--wheel", "-o", str(dist), cwd=WORKSPACE_ROOT)
        assert proc.returncode == 0, proc.stderr
    wheels = sorted(dist.glob("*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == ["bsq_tokenizer", "infinity_scales"]
    venv = tmp_path / "venv"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    proc = _uv("venv", "-q", "--python", py, str(venv), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    python = venv / "bin" / "python"
    # offline first (the uv cache already holds torch/numpy/pillow after `uv sync`), then allow the index
    wheel_args = [str(w) for w in wheels]
    proc = _uv("pip", "install", "-q", "--offline", "--python", str(python), *wheel_args, cwd=tmp_path)
    if proc.returncode != 0:
        proc = _uv("pip", "install", "-q", "--python", str(python), *wheel_args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = subprocess.run([str(python), "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "WHEEL-OK" in run.stdout
    script = venv / "bin" / "bsq-tokenizer"
    assert script.exists()
    help_run = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0 and "reconstruct" in help_run.stdout
