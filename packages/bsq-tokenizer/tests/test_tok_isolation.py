"""``import bsq_tokenizer`` (and the CLI module) stays light: no ray, mlflow, transformers or safetensors."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("ray", "mlflow", "transformers", "safetensors", "matplotlib", "lpips", "torchvision")  # (torch itself imports tqdm)


def test_import_pulls_in_no_heavy_dependencies():
    code = (
        "import json, sys\n"
        "import bsq_tokenizer, bsq_tokenizer.cli, bsq_tokenizer.bitfile, bsq_tokenizer.quantizers, bsq_tokenizer.loading\n"
        "import bsq_tokenizer.schedules, bsq_tokenizer.multiscale, bsq_tokenizer.safetensors_io\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {list(HEAVY)!r})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
