"""The root conftest finds the official fixtures in shared/fixtures/official and $INFINITY_OFFICIAL_FIXTURES, gives each
parity test one id per fixture file, and skips with the reason when there is none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PARITY = REPO / "packages" / "bsq-tokenizer" / "tests" / "test_tok_parity.py"


def _pytest(env: dict[str, str], *args: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("INFINITY_SHARED_DIR", "INFINITY_OFFICIAL_FIXTURES")}
    done = subprocess.run([sys.executable, "-m", "pytest", str(PARITY), "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, env={**clean, **env}, cwd=REPO, timeout=600)  # fmt: skip
    return done.stdout + done.stderr


def test_fixtures_from_both_places_get_their_file_stem_as_id(tmp_path: Path) -> None:
    shared, extra = tmp_path / "shared", tmp_path / "mine"
    (shared / "fixtures" / "official").mkdir(parents=True)
    extra.mkdir()
    torch.save({"kind": "bsq_vae"}, shared / "fixtures" / "official" / "vae_in_shared.pt")
    torch.save({"kind": "infinity"}, shared / "fixtures" / "official" / "ar_other_kind.pt")
    torch.save({"kind": "bsq_vae"}, extra / "vae_from_env.pt")
    out = _pytest({"INFINITY_SHARED_DIR": str(shared), "INFINITY_OFFICIAL_FIXTURES": str(extra)}, "--collect-only", "-q")
    ids = {line.split("::", 1)[1] for line in out.splitlines() if "::test_encoder_features_match" in line}
    assert ids == {"test_encoder_features_match[vae_in_shared]", "test_encoder_features_match[vae_from_env]"}, out


def test_without_shared_the_parity_tests_skip_with_the_reason(tmp_path: Path) -> None:
    out = _pytest({"INFINITY_SHARED_DIR": str(tmp_path / "absent")}, "-q", "-rs", "-k", "encoder_features")
    assert "test_encoder_features_match[no-fixtures]" in out or "1 skipped" in out, out
    assert "no official 'bsq_vae' fixtures" in out and "failed" not in out, out
    bad = _pytest({"INFINITY_OFFICIAL_FIXTURES": str(tmp_path / "nowhere")}, "--collect-only", "-q")
    assert "INFINITY_OFFICIAL_FIXTURES points at" in bad and "not a directory" in bad, bad
