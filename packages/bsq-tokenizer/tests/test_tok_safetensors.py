"""Our safetensors reader/writer against the reference ``safetensors`` package (dev dependency)."""

from __future__ import annotations

import struct

import pytest
import torch
from bsq_tokenizer.safetensors_io import load_safetensors, save_safetensors

safetensors_torch = pytest.importorskip("safetensors.torch")


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(3, 4, generator=g),
        "b": torch.randn(5, generator=g).to(torch.bfloat16),
        "c.half": torch.randn(2, 2, 2, generator=g).half(),
        "idx": torch.arange(7, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "u8": torch.arange(5, dtype=torch.uint8),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "empty": torch.zeros(0, 3),
    }


def test_our_file_reads_with_reference(tmp_path):
    tensors = _tensors()
    path = tmp_path / "ours.safetensors"
    save_safetensors(tensors, path, metadata={"format": "test", "note": "ü"})
    loaded = safetensors_torch.load_file(str(path))
    assert loaded.keys() == tensors.keys()
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v), k
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"format": "test", "note": "ü"}


def test_reference_file_reads_with_ours(tmp_path):
    tensors = _tensors()
    path = tmp_path / "ref.safetensors"
    safetensors_torch.save_file(tensors, str(path), metadata={"k": "v"})
    loaded, meta = load_safetensors(path)
    assert meta == {"k": "v"}
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v), k


def test_non_contiguous_and_round_trip(tmp_path):
    x = torch.randn(4, 6).t()
    path = tmp_path / "x.safetensors"
    save_safetensors({"x": x}, path)
    out, meta = load_safetensors(path)
    assert meta == {} and torch.equal(out["x"], x)
    assert not list(tmp_path.glob("*.tmp")), "temporary file left behind"


def test_corrupt_and_truncated_files(tmp_path):
    path = tmp_path / "t.safetensors"
    save_safetensors({"x": torch.randn(100)}, path)
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        load_safetensors(tmp_path / "trunc.safetensors")
    (tmp_path / "short.safetensors").write_bytes(data[:5])
    with pytest.raises(ValueError):
        load_safetensors(tmp_path / "short.safetensors")
    (tmp_path / "hdr.safetensors").write_bytes(struct.pack("<Q", 10**12) + data[8:])
    with pytest.raises(ValueError, match="header"):
        load_safetensors(tmp_path / "hdr.safetensors")
    (tmp_path / "json.safetensors").write_bytes(struct.pack("<Q", 4) + b"{{{{" + data)
    with pytest.raises(ValueError, match="corrupt"):
        load_safetensors(tmp_path / "json.safetensors")
    with pytest.raises(FileNotFoundError):
        load_safetensors(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="str -> str"):
        save_safetensors({"x": torch.zeros(1)}, path, metadata={"a": 1})  # type: ignore[dict-item]
