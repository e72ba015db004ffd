"""The shared model I/O (``bsq_tokenizer.model_io``): safetensors files, dtypes kept, memory-mapped loading, errors."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch
from bsq_tokenizer import BSQTokenizer, CheckpointMismatchError
from bsq_tokenizer.model_io import load_weights, save_weights, state_fingerprint
from safetensors import safe_open
from safetensors.torch import load_file, save_file


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
        "transposed": torch.randn(4, 6, generator=g).t(),
    }


def _mapped_from(tensor: torch.Tensor, path: Path) -> bool:
    """Whether the tensor's memory lies in a mapping of ``path`` (Linux ``/proc/self/maps``)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(path.resolve()):
            begin, end = (int(x, 16) for x in fields[0].split("-"))
            if begin <= address < end:
                return True
    return False


def test_save_keeps_dtypes_and_is_read_by_the_reference(tmp_path):
    tensors = _tensors()
    path = save_weights(tensors, tmp_path / "w.safetensors", metadata={"format": "test", "note": "ü"})
    assert not list(tmp_path.glob("*.tmp")), "temporary file left behind"
    reference = load_file(path)
    ours = load_weights(path)
    for name, tensor in tensors.items():
        assert reference[name].dtype == ours[name].dtype == tensor.dtype, name
        assert torch.equal(reference[name], tensor) and torch.equal(ours[name], tensor), name
    with safe_open(path, framework="pt") as handle:
        assert handle.metadata() == {"format": "test", "note": "ü"}


def test_load_casts_floating_tensors_only(tmp_path):
    path = save_weights(_tensors(), tmp_path / "w.safetensors")
    loaded = load_weights(path, dtype=torch.bfloat16, device="cpu")
    assert loaded["a.weight"].dtype == loaded["c.half"].dtype == loaded["scalar"].dtype == torch.bfloat16
    assert loaded["idx"].dtype == torch.int64 and loaded["mask"].dtype == torch.bool


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_loaded_tensors_are_memory_mapped_not_copied(tmp_path):
    path = save_weights({"x": torch.randn(4096), "y": torch.randn(7)}, tmp_path / "w.safetensors")
    loaded = load_weights(path)
    assert _mapped_from(loaded["x"], path) and _mapped_from(loaded["y"], path)
    original = loaded["x"].clone()
    loaded["x"].add_(1.0)  # a private mapping: writing to the tensor never writes to the file
    assert torch.equal(load_file(path)["x"], original) and not torch.equal(loaded["x"], original)


def test_damaged_files_name_the_file(tmp_path):
    path = save_weights({"x": torch.randn(100)}, tmp_path / "t.safetensors")
    data = path.read_bytes()
    cases = {
        "trunc": data[:-10],
        "short": data[:5],
        "empty": b"",
        "header": struct.pack("<Q", 10**12) + data[8:],
        "json": struct.pack("<Q", 4) + b"{{{{" + data,
        "png": b"\x89PNG\r\n\x1a\n" + bytes(64),
    }
    for name, blob in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(blob)
        with pytest.raises(ValueError, match=rf"{name}\.safetensors is not a readable safetensors file"):
            load_weights(bad)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_weights(tmp_path / "missing.safetensors")


def test_one_checkpoint_error_type():
    from bsq_tokenizer import official

    assert official.CheckpointMismatchError is CheckpointMismatchError
    assert issubclass(CheckpointMismatchError, ValueError)


def test_fingerprint_identifies_values_not_dtype_or_storage():
    g = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(5, 3, generator=g), "n": torch.arange(3)}
    same = {"n": state["n"].clone(), "w": state["w"].clone()}  # other order, other storage
    assert state_fingerprint(state) == state_fingerprint(same)
    assert state_fingerprint(state) == state_fingerprint({**state, "w": state["w"].to(torch.bfloat16)})
    assert state_fingerprint(state) != state_fingerprint({**state, "w": state["w"] + 0.5})
    assert state_fingerprint(state) != state_fingerprint({"v": state["w"], "n": state["n"]})
    assert state_fingerprint(state) != state_fingerprint({**state, "w": state["w"].reshape(3, 5)})
    assert len(state_fingerprint(state)) == 16


# ---------------------------------------------------------------------------------------------------- the tokenizer
def test_save_pretrained_keeps_the_dtype(tiny_model, tmp_path):
    """A bfloat16 tokenizer is saved as bfloat16 (it used to be cast to float32) and loads back as it was."""
    bf16 = BSQTokenizer(tiny_model.config)
    bf16.load_state_dict(tiny_model.state_dict())
    bf16 = bf16.to(torch.bfloat16)
    out = bf16.save_pretrained(tmp_path / "bf16")
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.bfloat16}
    loaded = BSQTokenizer.from_pretrained(out)
    assert all(a.dtype == torch.bfloat16 and torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), bf16.state_dict().values()))
    as_fp32 = BSQTokenizer.from_pretrained(out, dtype=torch.float32)
    assert {t.dtype for t in as_fp32.state_dict().values()} == {torch.float32}


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_from_pretrained_parameters_are_the_mapped_file(tiny_model, tmp_path):
    out = tiny_model.save_pretrained(tmp_path / "tok")
    loaded = BSQTokenizer.from_pretrained(out)
    assert all(_mapped_from(p, out / "model.safetensors") for p in loaded.parameters())
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    # saving over the directory a live model was loaded from replaces the file; the loaded model keeps its values
    changed = BSQTokenizer(tiny_model.config)
    changed.save_pretrained(out)
    assert all(torch.equal(before[k], v) for k, v in loaded.state_dict().items())
    loaded.save_pretrained(tmp_path / "again")  # a mapped model saves like any other
    again = BSQTokenizer.from_pretrained(tmp_path / "again")
    assert all(torch.equal(before[k], v) for k, v in again.state_dict().items())


def test_from_pretrained_signature_places_device_and_dtype(tiny_model, tmp_path):
    out = tiny_model.save_pretrained(tmp_path / "tok")
    loaded = BSQTokenizer.from_pretrained(out, device="cpu", dtype=torch.float64)
    assert {(p.device.type, p.dtype) for p in loaded.parameters()} == {("cpu", torch.float64)}
    assert not loaded.training


def test_from_official_state_dict_is_copied_not_aliased(official_like_model):
    state = official_like_model.state_dict()
    loaded = BSQTokenizer.from_official(state)
    with torch.no_grad():
        next(loaded.parameters()).add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(state.values(), official_like_model.state_dict().values()))
    assert not torch.equal(next(loaded.parameters()), next(official_like_model.parameters()))


def test_save_file_from_reference_loads_as_tokenizer(tiny_model, tmp_path):
    """A directory whose weights were written by ``safetensors`` itself (e.g. another tool) loads the same."""
    out = tiny_model.save_pretrained(tmp_path / "tok")
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, out / "model.safetensors")
    loaded = BSQTokenizer.from_pretrained(out)
    assert loaded.weights_fingerprint() == tiny_model.weights_fingerprint()
