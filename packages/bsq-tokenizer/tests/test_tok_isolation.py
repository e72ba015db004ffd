"""In a fresh process: ``import bsq_tokenizer`` stays light, and the CLI fails on bad input with one line, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("ray", "mlflow", "transformers", "matplotlib", "lpips", "torchvision")  # torch imports tqdm


def test_import_is_light_lazy_and_cli_error_is_one_line(tmp_path):
    """One subprocess (one torch import): schedules/config load without torch, the lazy exports still resolve,
    no heavy optional dependency comes in, and a CLI error is one line."""
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code = (
        "import json, sys\n"
        "import bsq_tokenizer.schedules\n"
        "from bsq_tokenizer import schedules, PRESETS, TokenizerConfig\n"
        "light = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'PIL'))\n"
        "last = list(schedules.get_scale_schedule(schedules.nearest_template(1.0), '0.06M')[-1])\n"
        "from bsq_tokenizer import BSQTokenizer, EncodedImages, load_tokenizer, CheckpointMismatchError\n"
        "lazy = [type(BSQTokenizer(PRESETS['debug'])).__module__, 'torch' in sys.modules,\n"
        "        'EncodedImages' in dir(bsq_tokenizer), bsq_tokenizer.load_tokenizer is load_tokenizer]\n"
        "print(json.dumps({'light': light, 'last': last, 'lazy': lazy}), flush=True)\n"
        "import bsq_tokenizer, bsq_tokenizer.cli, bsq_tokenizer.bitfile, bsq_tokenizer.quantizers, bsq_tokenizer.loading\n"
        "import bsq_tokenizer.schedules, bsq_tokenizer.multiscale, bsq_tokenizer.model_io\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {list(HEAVY)!r})\n"
        "print(json.dumps(heavy), flush=True)\n"
        f"sys.exit(bsq_tokenizer.cli.main(['reconstruct', {str(bad)!r}, '--preset', 'debug', '--weights', {str(bad)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    first = json.loads(lines[0])
    assert first["light"] == []  # no torch/numpy/PIL before a torch-backed export is touched
    assert first["last"] == [16, 16]
    assert first["lazy"] == ["bsq_tokenizer.model", True, True, True]
    assert json.loads(lines[1]) == []
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "cannot read" in errors[0], proc.stderr
