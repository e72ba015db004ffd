"""Exactly-once output under SIGKILL: kill the CLI at random points, resume, compare with an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from infinity_data.shards import read_tar_samples
from infinity_data.testing import make_synthetic_shards


def _command(config: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "infinity_data.cli", "curate", "--config", str(config), "--quiet", f"output.path={output}"]


def _snapshot(output: Path) -> tuple[dict[str, bytes], list[str], dict[str, dict]]:
    tars = {p.name: p.read_bytes() for p in sorted((output / "shards").glob("*.tar"))}
    keys = [key for p in sorted((output / "shards").glob("*.tar")) for key, _ in read_tar_samples(p)]
    stats = {}
    for p in sorted((output / "stats").glob("*.stats.json")):
        s = json.loads(p.read_text())
        s.pop("stage_seconds")  # timings differ between runs; everything else must not
        stats[p.name] = s
    return tars, keys, stats


def test_sigkill_at_random_points_then_resume_gives_identical_output(tmp_path):
    inputs = tmp_path / "in"
    make_synthetic_shards(inputs, num_shards=14, clean_per_shard=3, seed=1, size=256, with_text=False)
    config = tmp_path / "job.toml"
    config.write_text(
        f'executor = "local"\n[input]\npaths = ["{inputs}"]\n[output]\npath = "unused"\nwrite_splits = true\n'
        '[filters]\nenabled = ["caption", "resolution", "aspect_ratio", "dedup"]\n[filters.resolution]\npn = "0.06M"\n'
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference = tmp_path / "reference"
    subprocess.run(_command(config, reference), check=True, env=env, capture_output=True, timeout=300)

    resumed = tmp_path / "resumed"
    rng = random.Random(0)
    # Kill points: after a random delay once 0, then increasing random numbers of shards are committed.
    targets = [0, *sorted(rng.sample(range(1, 13), 5))]
    kills, committed_at_kill = 0, []
    for target in targets:
        process = subprocess.Popen(_command(config, resumed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            done = len(list((resumed / "stats").glob("*.stats.json"))) if (resumed / "stats").is_dir() else 0
            if done >= target:
                time.sleep(rng.uniform(0.0, 0.3 if target == 0 else 0.05))
                break
            time.sleep(0.005)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        committed_at_kill.append(len(list((resumed / "stats").glob("*.stats.json"))) if (resumed / "stats").is_dir() else 0)
    assert kills >= 5, f"only {kills} kills landed mid-run (committed counts {committed_at_kill})"
    final = subprocess.run(_command(config, resumed), env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr

    ref_tars, ref_keys, ref_stats = _snapshot(reference)
    got_tars, got_keys, got_stats = _snapshot(resumed)
    assert got_keys == ref_keys and len(set(got_keys)) == len(got_keys)  # nothing missing, no duplicates
    assert got_tars == ref_tars  # byte-identical shards
    assert got_stats == ref_stats
    assert sorted(p.name for p in (resumed / "splits").glob("*")) == sorted(p.name for p in (reference / "splits").glob("*"))
    leftovers = [p for p in resumed.rglob("*") if p.name.startswith(".tmp-")]
    assert not leftovers
    # a finished job re-run is a quick no-op
    start = time.perf_counter()
    again = subprocess.run(_command(config, resumed), env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 processed" in again.stdout
    assert time.perf_counter() - start < 15


def test_prepare_removes_temporary_files_of_a_killed_attempt_in_every_output_folder(tmp_path):
    # A SIGKILL can land inside any atomic write: a shard file, the run fingerprint or the report.
    from infinity_data.commit import OutputLayout
    from infinity_data.config import config_from_dict

    config = config_from_dict({"input": {"paths": [str(tmp_path / "in")]}, "output": {"path": str(tmp_path / "out")}})
    layout = OutputLayout(tmp_path / "out")
    layout.prepare(config)
    planted = [
        layout.root / ".tmp-run.json.123",
        layout.report / ".tmp-report.md.123",
        layout.stats / ".tmp-0000.stats.json.123",
        layout.images / ".tmp-0000.123" / "a.jpg",
    ]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    (layout.report / "report.md").write_text("kept")
    layout.prepare(config)
    assert [p for p in layout.root.rglob("*") if p.name.startswith(".tmp-")] == []
    assert (layout.report / "report.md").read_text() == "kept"


def test_a_run_killed_while_writing_the_report_is_finished_by_the_next_run(tmp_path, monkeypatch):
    # report.json marks a finished run, so it must be the report's last file: a crash before it means "redo the report".
    from infinity_data import report as report_module
    from infinity_data.config import config_from_dict
    from infinity_data.runner import curate

    make_synthetic_shards(tmp_path / "in", num_shards=2, clean_per_shard=2, seed=3, size=256, with_text=False)
    config = config_from_dict({
        "input": {"paths": [str(tmp_path / "in")]}, "output": {"path": str(tmp_path / "out")}, "executor": "local",
        "progress": False, "filters": {"enabled": ["caption", "resolution"], "resolution": {"pn": "0.06M"}},
    })
    def crash(report):
        raise KeyboardInterrupt("killed while writing the report")

    monkeypatch.setattr(report_module, "_markdown", crash)
    with pytest.raises(KeyboardInterrupt):
        curate(config)
    out = tmp_path / "out"
    assert len(list((out / "stats").glob("*.stats.json"))) == 2  # every shard committed ...
    assert not (out / "report" / "report.json").exists()  # ... but the run is not marked finished
    monkeypatch.undo()  # the report writer works again
    result = curate(config)
    assert result.shards_processed == 0 and result.report["totals"]["shards"] == 2
    assert (out / "report" / "report.md").read_text().strip() and (out / "report" / "report.json").is_file()
    assert curate(config).shards_skipped == 2  # and now a re-run is the quick no-op
