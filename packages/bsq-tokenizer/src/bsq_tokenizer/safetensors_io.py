"""Reading and writing the safetensors format without the ``safetensors`` package.

Layout (https://github.com/huggingface/safetensors, "Format"): an unsigned 64-bit little-endian integer N, then N
bytes of UTF-8 JSON, then the raw tensor bytes. The JSON maps each tensor name to
``{"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}`` with offsets relative to the start of the byte
buffer, plus an optional ``"__metadata__"`` object of str -> str. Tensor bytes are little-endian and C-contiguous.
We pad the header with spaces to a multiple of 8 bytes (as the reference writer does) so every tensor is aligned.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import tempfile
from pathlib import Path

import torch

__all__ = ["load_safetensors", "save_safetensors"]

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (
    ("U16", "uint16"),
    ("U32", "uint32"),
    ("U64", "uint64"),
    ("F8_E4M3", "float8_e4m3fn"),
    ("F8_E5M2", "float8_e5m2"),
):
    if hasattr(torch, _attr):
        _DTYPES[_name] = getattr(torch, _attr)
_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    raw = flat.view(torch.uint8) if flat.dtype != torch.bool else flat.to(torch.uint8)
    data = raw.numpy().tobytes()
    if sys.byteorder == "big" and flat.element_size() > 1:  # the format is little-endian
        import numpy as np

        data = np.frombuffer(data, dtype=f">u{flat.element_size()}").astype(f"<u{flat.element_size()}").tobytes()
    return data


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` (and optional str -> str ``metadata``) to ``path`` in safetensors format, atomically.

    The file is written to a temporary name in the same directory and moved into place with ``os.replace``, so a
    reader never sees a half-written file.
    """
    if metadata is not None:
        bad = {k: v for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))}
        if bad:
            raise ValueError(f"safetensors metadata must map str -> str; offending entries: {bad}")
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name]
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        if tensor.dtype not in _NAMES:
            raise ValueError(f"{name!r} has dtype {tensor.dtype}, which safetensors cannot store")
        data = _tensor_bytes(tensor)
        header[name] = {
            "dtype": _NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(struct.pack("<Q", len(header_bytes)))
            handle.write(header_bytes)
            for data in blobs:
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_safetensors(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; returns ``(tensors, metadata)``. Raises ``ValueError`` for a malformed file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no safetensors file at {path}")
    raw = path.read_bytes()
    if len(raw) < 8:
        raise ValueError(f"{path} is not a safetensors file: only {len(raw)} bytes (truncated?)")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if header_len > min(_MAX_HEADER, len(raw) - 8):
        raise ValueError(f"{path} is not a valid safetensors file: header length {header_len} exceeds the file size")
    try:
        header = json.loads(raw[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} has a corrupt safetensors header: {err}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} has a corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValueError(f"{path}: __metadata__ must map str -> str")
    body = memoryview(raw)[8 + header_len :]
    tensors: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: bad header entry for tensor {name!r}: {info!r}") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        expected = math.prod(shape) * itemsize
        if not 0 <= begin <= end <= len(body) or end - begin != expected:
            raise ValueError(
                f"{path}: tensor {name!r} has data_offsets {[begin, end]} for {expected} bytes "
                f"but the data section holds {len(body)} bytes (truncated or corrupt file)"
            )
        if expected == 0:
            tensor = torch.empty(shape, dtype=dtype)
        else:
            chunk = bytearray(body[begin:end])
            if sys.byteorder == "big" and itemsize > 1:
                import numpy as np

                chunk = bytearray(np.frombuffer(chunk, dtype=f"<u{itemsize}").astype(f">u{itemsize}").tobytes())
            if dtype == torch.bool:
                tensor = torch.frombuffer(chunk, dtype=torch.uint8).to(torch.bool).reshape(shape)
            else:
                tensor = torch.frombuffer(chunk, dtype=dtype).reshape(shape)
        tensors[name] = tensor.to(device)
    return tensors, dict(metadata)
