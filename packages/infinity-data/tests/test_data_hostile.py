"""Hostile inputs: damaged and odd webdataset shards lose no readable sample, and the CLI fails with one line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from infinity_data.cli import main
from infinity_data.config import config_from_dict
from infinity_data.runner import curate
from infinity_data.shards import ShardRef, read_shard, read_tar_samples
from infinity_data.testing import clean_image

REPO = Path(__file__).resolve().parents[3]
FILTERS = {"enabled": ["caption", "resolution", "aspect_ratio"], "resolution": {"pn": "0.06M"}}


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    clean_image(np.random.default_rng(seed), 320, 256).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes]]) -> list[int]:
    """Write ``members`` as a plain ustar archive; returns the byte offset of each member's header."""
    offsets = []
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            offsets.append(tar.offset)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return offsets


def _sample(key: str, seed: int) -> list[tuple[str, bytes]]:
    return [(f"{key}.jpg", _jpeg(seed)), (f"{key}.txt", f"caption of {key} {seed}".encode())]


def _curate(inputs: list[Path], output: Path, **extra: object) -> dict:
    data = {"input": {"paths": [str(p) for p in inputs]}, "output": {"path": str(output)}, "executor": "local",
            "progress": False, "filters": FILTERS, **extra}  # fmt: skip
    return curate(config_from_dict(data)).report["totals"]


def _kept_keys(output: Path) -> list[str]:
    return [key for tar in sorted((output / "shards").glob("*.tar")) for key, _ in read_tar_samples(tar)]


def _removed(output: Path) -> dict[str, str]:
    removed: dict[str, str] = {}
    for stats in sorted((output / "stats").glob("*.stats.json")):
        removed.update(json.loads(stats.read_text())["removed"])
    return removed


def test_a_key_twice_in_a_tar_keeps_both_samples_under_distinct_keys(tmp_path):
    # the same key later in the tar, and the same key right after itself (a repeated extension starts a new sample)
    members = _sample("a", 1) + _sample("b", 2) + _sample("a", 3) + _sample("a", 4)
    (tmp_path / "in").mkdir()
    _tar(tmp_path / "in" / "dup.tar", members)
    totals = _curate([tmp_path / "in"], tmp_path / "out")
    assert totals["in"] == 4 and totals["kept"] == 4 and totals["balanced"]
    assert totals["in"] == totals["kept"] + totals["dropped"] + totals["error_count"]
    assert sorted(_kept_keys(tmp_path / "out")) == ["a", "a-dup1", "a-dup2", "b"]
    # the captions stay with their own image
    rows = read_shard(ShardRef(index=0, name="dup", kind="webdataset", path=str(tmp_path / "in" / "dup.tar")))
    assert [(r["key"], r["caption"]) for r in rows] == [
        ("a", "caption of a 1"), ("b", "caption of b 2"), ("a-dup1", "caption of a 3"), ("a-dup2", "caption of a 4"),
    ]  # fmt: skip


def test_a_dup_suffix_never_clashes_with_a_real_key(tmp_path):
    members = _sample("a", 1) + _sample("a", 2) + _sample("a-dup1", 3)
    _tar(tmp_path / "x.tar", members)
    rows = read_shard(ShardRef(index=0, name="x", kind="webdataset", path=str(tmp_path / "x.tar")))
    keys = [r["key"] for r in rows]
    assert len(set(keys)) == 3 and keys[:2] == ["a", "a-dup1"]


# cut points relative to the header of the third sample's first member (c.jpg): inside its data block, inside its
# header, exactly at it, and at the end of the last member (no end-of-archive marker).
CUTS = {
    "inside-data-block": lambda offsets, size: offsets[4] + 512 + 300,
    "inside-header": lambda offsets, size: offsets[4] + 100,
    "at-a-header": lambda offsets, size: offsets[4],
    "inside-a-later-header": lambda offsets, size: offsets[5] + 7,
}


@pytest.mark.parametrize("where", list(CUTS))
def test_a_truncated_tar_keeps_every_complete_sample_and_reports_the_rest(tmp_path, where):
    whole = tmp_path / "whole.tar"
    offsets = _tar(whole, _sample("a", 1) + _sample("b", 2) + _sample("c", 3) + _sample("d", 4))
    data = whole.read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.tar").write_bytes(data[: CUTS[where](offsets, len(data))])
    totals = _curate([tmp_path / "in"], tmp_path / "out")
    # a and b were read whole before the cut
    assert _kept_keys(tmp_path / "out") == ["a", "b"]
    removed = _removed(tmp_path / "out")
    if where == "inside-a-later-header":  # c's image was read whole, its caption member is cut away: reported
        assert removed.pop("c") == "caption:too_short"
    assert list(removed.values()) == ["error:truncated_shard"]
    assert totals["errors"] == {"truncated_shard": 1} and totals["balanced"]
    assert totals["in"] == totals["kept"] + totals["dropped"] + totals["error_count"]


def test_a_tar_without_its_end_marker_is_truncated_and_an_intact_one_is_not(tmp_path):
    whole = tmp_path / "whole.tar"
    offsets = _tar(whole, _sample("a", 1) + _sample("b", 2))
    end_of_last = offsets[-1] + 512 + 512  # the caption member is < 512 bytes: one data block
    (tmp_path / "cut.tar").write_bytes(whole.read_bytes()[:end_of_last])
    for path, errors in ((whole, []), (tmp_path / "cut.tar", ["truncated_shard"])):
        rows = read_shard(ShardRef(index=0, name="x", kind="webdataset", path=str(path)))
        assert [r["key"] for r in rows if not r["read_error"]] == ["a", "b"]
        assert [r["read_error"] for r in rows if r["read_error"]] == errors


def test_garbage_is_an_unreadable_shard(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "junk.tar").write_bytes(b"this is not a tar file" * 40)
    totals = _curate([tmp_path / "in"], tmp_path / "out")
    assert totals["errors"] == {"unreadable_shard": 1} and totals["kept"] == 0 and totals["balanced"]


def test_the_tar_reader_streams(tmp_path):
    """The first sample comes out before the rest of the file is read: overwrite the rest while the reader is
    paused after one sample, and the reader sees the damage (a reader that collected everything first would not)."""
    path = tmp_path / "s.tar"
    offsets = _tar(path, [m for i in range(20) for m in _sample(f"k{i:02d}", i)])
    samples = read_tar_samples(path)
    key, files = next(samples)
    assert key == "k00" and files["txt"] == b"caption of k00 0"
    with path.open("r+b") as f:
        f.seek(offsets[10])
        f.write(b"\xff" * (path.stat().st_size - offsets[10]))
    keys = []
    with pytest.raises(tarfile.ReadError, match="unreadable tar header"):
        for key, _ in samples:
            keys.append(key)
    assert keys == ["k01", "k02", "k03", "k04"]


def test_shard_rows_stream_and_the_last_row_carries_the_size(tmp_path):
    from infinity_data.shards import iter_shard

    _tar(tmp_path / "x.tar", _sample("a", 1) + _sample("b", 2) + _sample("c", 3))
    rows = list(iter_shard(ShardRef(index=0, name="x", kind="webdataset", path=str(tmp_path / "x.tar"))))
    assert [r["order"] for r in rows] == [0, 1, 2] and [r["shard_size"] for r in rows] == [0, 0, 3]


@pytest.mark.ray_cluster
def test_ray_executor_keeps_the_same_samples_of_damaged_shards_and_quiet_is_quiet(tmp_path):
    """The CLI with --quiet among the overrides, on Ray, in a child process: the same kept bytes as the local
    executor, no INFO lines, and the progress postfix (shown without --quiet) is a running total."""
    pytest.importorskip("ray")
    inputs = tmp_path / "in"
    inputs.mkdir()
    _tar(inputs / "dup.tar", _sample("a", 1) + _sample("a", 2) + _sample("b", 3))
    offsets = _tar(tmp_path / "whole.tar", _sample("c", 4) + _sample("d", 5) + _sample("e", 6))
    (inputs / "cut.tar").write_bytes((tmp_path / "whole.tar").read_bytes()[: offsets[4] + 600])
    config = tmp_path / "c.toml"
    config.write_text(
        'executor = "ray"\n[input]\npaths = ["x"]\n[output]\npath = "y"\n[filters]\n'
        'enabled = ["caption", "resolution", "aspect_ratio"]\n[filters.resolution]\npn = "0.06M"\n'
        "[ray]\nnum_cpus = 1\nbatch_size = 2\n"
    )
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    argv = [sys.executable, "-m", "infinity_data.cli", "curate", "--config", str(config), f'input.paths=["{inputs}"]',
            "--quiet", f"output.path={tmp_path / 'ray'}"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "in 6 kept 5 dropped 0 errors 1" in done.stdout
    noisy = [line for line in done.stderr.splitlines() if "INFO" in line]
    assert not noisy, noisy[:5]
    local = _curate([inputs], tmp_path / "local")
    assert local["kept"] == 5
    for tar in sorted((tmp_path / "local" / "shards").glob("*.tar")):
        assert (tmp_path / "ray" / "shards" / tar.name).read_bytes() == tar.read_bytes()


def test_progress_postfix_shows_running_totals(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for shard in range(3):
        _tar(inputs / f"s{shard}.tar", _sample(f"k{shard}", shard) + _sample(f"j{shard}", 10 + shard))
    config = tmp_path / "c.toml"
    config.write_text('executor = "local"\n[input]\npaths = ["x"]\n[output]\npath = "y"\n[filters]\n'
                      'enabled = ["caption"]\n')  # fmt: skip
    assert main(["curate", "--config", str(config), f'input.paths=["{inputs}"]', f"output.path={tmp_path}/o"]) == 0
    err = capsys.readouterr().err
    assert "kept=6" in err, err[-2000:]  # the last shard alone kept 2


# ---------------------------------------------------------------------------------------------------- the CLI


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _good_config(tmp_path: Path, inputs: Path) -> Path:
    return _write(tmp_path / "good.toml", f'executor = "local"\n[input]\npaths = ["{inputs}"]\n[output]\n'
                                          f'path = "{tmp_path}/out"\n[filters]\nenabled = ["caption"]\n')  # fmt: skip


BAD_CLI = {
    # name: (argv builder, text the one error line must contain)
    "missing-config": (lambda t, c: ["--config", str(t / "nope.toml")], "nope.toml"),
    "empty-config": (lambda t, c: ["--config", str(_write(t / "empty.toml", ""))], "no [input] section"),
    "corrupt-config": (lambda t, c: ["--config", str(_write(t / "bad.toml", "[input\npaths = "))], "bad.toml"),
    "binary-config": (lambda t, c: ["--config", str(_write(t / "bin.toml", b"\xff\xfe\x00junk"))], "bin.toml"),
    "config-is-a-folder": (lambda t, c: ["--config", str(t / "in")], "/in is not a file"),
    "bad-override-syntax": (lambda t, c: ["--config", str(c), "filters.enabled"], "section.key=value"),
    "unknown-override": (lambda t, c: ["--config", str(c), "filters.nsfw.on=true"], "nsfw"),
    "override-into-a-value": (lambda t, c: ["--config", str(c), "executor.x=1"], "executor"),
    "missing-input": (lambda t, c: ["--config", str(c), f'input.paths=["{t}/gone"]'], "gone"),
    "input-wrong-kind": (lambda t, c: ["--config", str(c), f'input.paths=["{_write(t / "a.zip", "zip")}"]'], "a.zip"),
    "output-under-a-file": (lambda t, c: ["--config", str(c), f"output.path={_write(t / 'f', 'x')}/out"], "f/out"),
}


@pytest.mark.parametrize("case", list(BAD_CLI))
def test_cli_bad_inputs_are_one_line_naming_the_file(tmp_path, case):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _tar(inputs / "s.tar", _sample("a", 1))
    build, needle = BAD_CLI[case]
    args = build(tmp_path, _good_config(tmp_path, inputs))
    done = subprocess.run([sys.executable, "-m", "infinity_data.cli", "curate", *args, "--quiet"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("infinity-data: error: ") and needle in lines[0], lines[0]


def test_cli_verbose_shows_the_traceback(tmp_path):
    config = _write(tmp_path / "c.toml", f'executor = "local"\n[input]\npaths = ["{tmp_path}"]\n[output]\n'
                                         f'path = "{_write(tmp_path / "f", "x")}/out"\n')  # fmt: skip
    _tar(tmp_path / "s.tar", _sample("a", 1))
    done = subprocess.run([sys.executable, "-m", "infinity_data.cli", "-v", "curate", "--config", str(config)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and "Traceback" in done.stderr


def test_cli_overrides_in_any_position(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _tar(inputs / "s.tar", _sample("a", 1))
    config = _good_config(tmp_path, inputs)
    argv = ["curate", "--config", str(config), "filters.enabled=[\"caption\"]", "--quiet", f"output.path={tmp_path}/o2"]
    assert main(argv) == 0
    assert (tmp_path / "o2" / "report" / "report.json").is_file()
    with pytest.raises(SystemExit):
        main(["curate", "--config", str(config), "--quiet", "--bogus"])
