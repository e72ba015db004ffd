"""In a fresh process: ``import bsq_tokenizer`` stays light, and the CLI fails on bad input with one line, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("ray", "mlflow", "transformers", "safetensors", "matplotlib", "lpips", "torchvision")  # torch imports tqdm


def test_import_is_light_and_cli_error_is_one_line(tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code = (
        "import json, sys\n"
        "import bsq_tokenizer, bsq_tokenizer.cli, bsq_tokenizer.bitfile, bsq_tokenizer.quantizers, bsq_tokenizer.loading\n"
        "import bsq_tokenizer.schedules, bsq_tokenizer.multiscale, bsq_tokenizer.safetensors_io\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {list(HEAVY)!r})\n"
        "print(json.dumps(heavy), flush=True)\n"
        f"sys.exit(bsq_tokenizer.cli.main(['reconstruct', {str(bad)!r}, '--preset', 'debug', '--weights', {str(bad)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert json.loads(proc.stdout.strip().splitlines()[0]) == []
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "cannot read" in errors[0], proc.stderr
