"""The parity tests accept an official fixture without its debugging aids and reject one without a required key.

Runs ``test_ar_parity.py`` in a child pytest on derived copies of each shared ``infinity`` fixture, picked up through
$INFINITY_OFFICIAL_FIXTURES as any user's fixture would be.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

PARITY = Path(__file__).with_name("test_ar_parity.py")


def _derived(source: Path, folder: Path, stem: str, edit) -> Path:
    fx = torch.load(source, map_location="cpu", weights_only=True)
    edit(fx)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(fx, folder / f"{stem}.pt")
    paired = source.parent / fx["paired_vae"]
    if paired.is_file() and not (folder / paired.name).exists():
        (folder / paired.name).symlink_to(paired)  # the decoded-image check finds the paired VAE next to the fixture
    return folder


def _parity(folder: Path, stem: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INFINITY_OFFICIAL_FIXTURES": str(folder)}
    return subprocess.run([sys.executable, "-m", "pytest", str(PARITY), "-q", "-p", "no:cacheprovider", "-k", stem],
                          capture_output=True, text=True, env=env, timeout=900)  # fmt: skip


def _strip_debugging_aids(fx: dict) -> None:
    del fx["teacher_forcing_intermediates"]
    del fx["greedy_generation"]["head_logits_cond"], fx["greedy_generation"]["head_logits_uncond"]


def test_a_fixture_without_debugging_aids_passes(official_infinity_fixture: Path, tmp_path: Path) -> None:
    source = official_infinity_fixture
    stem = f"{source.stem}_without_aids"
    done = _parity(_derived(source, tmp_path / "fx", stem, _strip_debugging_aids), stem)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 skipped" in done.stdout and "failed" not in done.stdout  # only the intermediates test skips


def test_a_fixture_without_a_required_key_fails_naming_it(official_infinity_fixture: Path, tmp_path: Path) -> None:
    source = official_infinity_fixture
    stem = f"{source.stem}_without_logits"
    done = _parity(_derived(source, tmp_path / "fx", stem, lambda fx: fx.pop("teacher_forcing_logits")), stem)
    assert done.returncode != 0
    assert "required keys missing: ['teacher_forcing_logits']" in done.stdout, done.stdout[-3000:]
