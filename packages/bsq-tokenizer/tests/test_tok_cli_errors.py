"""Every ``bsq-tokenizer`` subcommand over bad inputs: one line on stderr naming the file, exit code 1, no traceback.

Inputs: missing, empty, corrupt and wrong-kind files for every file argument; a decompression-bomb PNG; a packed
file from other weights; output paths that cannot be written (tests run as root, so "unwritable" is a path under a
regular file or an existing directory given as a file).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from bsq_tokenizer import BSQTokenizer
from bsq_tokenizer.bitfile import load_codes
from bsq_tokenizer.cli import main
from PIL import Image


def _bomb_png(path: Path, width: int = 20_000, height: int = 10_000) -> Path:
    """A 1-bit PNG of width x height pixels (2e8 > twice Pillow's limit) that compresses to ~25 KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_model):
    """A directory of good and bad inputs (names used by the table below)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    tiny_model.save_pretrained(root / "tok")
    g = np.random.default_rng(0)
    Image.fromarray(g.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(root / "photo.png")
    _bomb_png(root / "bomb.png")
    (root / "empty.png").write_bytes(b"")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "a_dir.png").mkdir()
    (root / "regular_file").write_text("not a directory")
    (root / "empty.pth").write_bytes(b"")
    torch.save({"vae": tiny_model.state_dict()}, root / "whole.pth")
    blob = (root / "whole.pth").read_bytes()
    (root / "cut.pth").write_bytes(blob[: len(blob) // 2])
    (root / "empty_dir").mkdir()
    codes = tiny_model.encode(Image.open(root / "photo.png"))
    data = codes.pack()
    (root / "photo.bsqb").write_bytes(data)
    (root / "empty.bsqb").write_bytes(b"")
    (root / "flipped.bsqb").write_bytes(data[:-20] + bytes([data[-20] ^ 1]) + data[-19:])
    torch.manual_seed(7)
    other = BSQTokenizer(tiny_model.config)
    other.save_pretrained(root / "other_tok")
    broken_config = tiny_model.save_pretrained(root / "broken_config")
    (broken_config / "config.json").write_text("{not json")
    truncated = tiny_model.save_pretrained(root / "truncated_weights")
    blob = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    return root


# (argv with {d} for the directory above, substring the error must contain, the path it must name)
CASES = {
    # images: missing, empty, corrupt, wrong kind, a directory, a decompression bomb
    "reconstruct_missing": (["reconstruct", "{d}/nope.png", "--weights", "{d}/tok"], "not found", "nope.png"),
    "reconstruct_empty": (["reconstruct", "{d}/empty.png", "--weights", "{d}/tok"], "cannot read image", "empty.png"),
    "reconstruct_corrupt": (["reconstruct", "{d}/corrupt.jpg", "--weights", "{d}/tok"], "cannot read image", "corrupt.jpg"),
    "reconstruct_wrong_kind": (["reconstruct", "{d}/photo.bsqb", "--weights", "{d}/tok"], "cannot read image", "photo.bsqb"),
    "reconstruct_directory": (["reconstruct", "{d}/a_dir.png", "--weights", "{d}/tok"], "is a directory", "a_dir.png"),
    "reconstruct_bomb": (["reconstruct", "{d}/bomb.png", "--weights", "{d}/tok"], "decompression bomb", "bomb.png"),
    "encode_bomb": (["encode", "{d}/bomb.png", "--weights", "{d}/tok", "-o", "{d}/x.bsqb"], "decompression bomb", "bomb.png"),
    "encode_empty": (["encode", "{d}/empty.png", "--weights", "{d}/tok", "-o", "{d}/x.bsqb"], "cannot read image", "empty.png"),
    # weights: missing, empty, corrupt, wrong kind
    "weights_missing": (["reconstruct", "{d}/photo.png", "--weights", "{d}/none"], "not found", "none"),
    "weights_empty_dir": (["reconstruct", "{d}/photo.png", "--weights", "{d}/empty_dir"], "missing", "empty_dir"),
    "weights_empty_pth": (["reconstruct", "{d}/photo.png", "--weights", "{d}/empty.pth"], "cannot read", "empty.pth"),
    "weights_wrong_kind": (["reconstruct", "{d}/photo.png", "--weights", "{d}/photo.png"], "not a PyTorch checkpoint", "photo.png"),
    "weights_truncated_pth": (["reconstruct", "{d}/photo.png", "--weights", "{d}/cut.pth"], "cannot read", "cut.pth"),
    "weights_bad_config": (["reconstruct", "{d}/photo.png", "--weights", "{d}/broken_config"], "not valid JSON", "config.json"),
    "weights_truncated": (
        ["reconstruct", "{d}/photo.png", "--weights", "{d}/truncated_weights"],
        "not a readable safetensors file",
        "model.safetensors",
    ),
    "info_wrong_kind": (["info", "{d}/photo.png"], "not a PyTorch checkpoint", "photo.png"),
    "info_bomb": (["info", "{d}/bomb.png"], "not a PyTorch checkpoint", "bomb.png"),
    "info_missing": (["info", "{d}/nope.bsqb"], "not found", "nope.bsqb"),
    "info_empty_bsqb": (["info", "{d}/empty.bsqb"], "truncated", "empty.bsqb"),
    "info_corrupt_bsqb": (["info", "{d}/flipped.bsqb"], "checksum", "flipped.bsqb"),
    "convert_missing": (["convert-official", "{d}/nope.pth", "-o", "{d}/conv"], "not found", "nope.pth"),
    "convert_wrong_kind": (["convert-official", "{d}/bomb.png", "-o", "{d}/conv"], "not a PyTorch checkpoint", "bomb.png"),
    "convert_empty": (["convert-official", "{d}/empty.pth", "-o", "{d}/conv"], "an empty file", "empty.pth"),
    "convert_truncated": (["convert-official", "{d}/cut.pth", "-o", "{d}/conv"], "cannot read", "cut.pth"),
    # packed codes: missing, empty, corrupt, wrong kind, other weights
    "decode_missing": (["decode", "{d}/nope.bsqb", "--weights", "{d}/tok", "-o", "{d}/y.png"], "not found", "nope.bsqb"),
    "decode_empty": (["decode", "{d}/empty.bsqb", "--weights", "{d}/tok", "-o", "{d}/y.png"], "truncated", "empty.bsqb"),
    "decode_corrupt": (["decode", "{d}/flipped.bsqb", "--weights", "{d}/tok", "-o", "{d}/y.png"], "checksum", "flipped.bsqb"),
    "decode_wrong_kind": (["decode", "{d}/bomb.png", "--weights", "{d}/tok", "-o", "{d}/y.png"], "magic", "bomb.png"),
    "decode_other_weights": (
        ["decode", "{d}/photo.bsqb", "--weights", "{d}/other_tok", "-o", "{d}/y.png"],
        "--allow-weights-mismatch",
        "photo.bsqb",
    ),
    # outputs that cannot be written
    "reconstruct_out_under_file": (
        ["reconstruct", "{d}/photo.png", "--weights", "{d}/tok", "-o", "{d}/regular_file/side.png"],
        "cannot write",
        "regular_file",
    ),
    "reconstruct_out_is_dir": (
        ["reconstruct", "{d}/photo.png", "--weights", "{d}/tok", "-o", "{d}/empty_dir"],
        "is a directory",
        "empty_dir",
    ),
    "encode_out_under_file": (
        ["encode", "{d}/photo.png", "--weights", "{d}/tok", "-o", "{d}/regular_file/x.bsqb"],
        "cannot write",
        "regular_file",
    ),
    "decode_out_under_file": (
        ["decode", "{d}/photo.bsqb", "--weights", "{d}/tok", "-o", "{d}/regular_file/y.png"],
        "cannot write",
        "regular_file",
    ),
    "convert_out_is_file": (
        ["convert-official", "{d}/empty.pth", "-o", "{d}/regular_file"],
        "cannot write",
        "regular_file",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_naming_the_file(bad, capsys, name):
    argv, message, names = CASES[name]
    code = main([a.format(d=bad) for a in argv])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"bsq-tokenizer {argv[0]}: error: "), err
    assert message in err and names in err, err


def test_other_weights_error_names_both_fingerprints_and_can_be_forced(bad, capsys, tiny_model):
    other = BSQTokenizer.from_pretrained(bad / "other_tok")
    argv = ["decode", str(bad / "photo.bsqb"), "--weights", str(bad / "other_tok"), "-o", str(bad / "forced.png")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert tiny_model.weights_fingerprint() in err and other.weights_fingerprint() in err
    assert main([*argv, "--allow-weights-mismatch"]) == 0
    assert Image.open(bad / "forced.png").size == (56, 40)
    assert main(["decode", str(bad / "photo.bsqb"), "--weights", str(bad / "tok"), "-o", str(bad / "ok.png")]) == 0
    capsys.readouterr()
    assert main(["info", str(bad / "photo.bsqb")]) == 0
    assert tiny_model.weights_fingerprint() in capsys.readouterr().out


def test_verbose_shows_the_traceback(bad, capsys):
    code = main(["-v", "reconstruct", str(bad / "bomb.png"), "--weights", str(bad / "tok")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and err.rstrip().splitlines()[-1].startswith("bsq-tokenizer reconstruct")


def test_decompression_bomb_from_the_console(bad):
    """As a user runs it: a fresh process, the decompression-bomb PNG, one line on stderr and exit code 1."""
    proc = subprocess.run(
        [sys.executable, "-m", "bsq_tokenizer.cli", "reconstruct", str(bad / "bomb.png"), "--weights", str(bad / "tok")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "bomb.png" in proc.stderr and "decompression bomb" in proc.stderr and "MAX_IMAGE_PIXELS" in proc.stderr


def test_version1_file_still_decodes_from_the_cli(bad, capsys, tiny_model):
    """A .bsqb in format version 1 (the same layout without the tokenizer record) decodes, with a warning."""
    data = (bad / "photo.bsqb").read_bytes()
    k = data[7]
    start = 22 + 4 * k
    (record_len,) = struct.unpack_from("<I", data, start)
    body = data[:4] + b"\x01" + data[5:start] + data[start + 4 + record_len : -4]
    (bad / "v1.bsqb").write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    code = main(["decode", str(bad / "v1.bsqb"), "--weights", str(bad / "other_tok"), "-o", str(bad / "v1.png")])
    assert code == 0, capsys.readouterr().err
    reference = main(["decode", str(bad / "photo.bsqb"), "--weights", str(bad / "tok"), "-o", str(bad / "v2.png")])
    assert reference == 0
    tok = BSQTokenizer.from_pretrained(bad / "tok")
    old, new = load_codes(bad / "v1.bsqb"), load_codes(bad / "photo.bsqb")
    assert old.weights_fingerprint is None and all(torch.equal(a, b) for a, b in zip(old.bits, new.bits))
    assert torch.equal(tok.decode(old), tok.decode(new))
    capsys.readouterr()
    assert main(["info", str(bad / "v1.bsqb")]) == 0
    assert "not recorded" in capsys.readouterr().out
