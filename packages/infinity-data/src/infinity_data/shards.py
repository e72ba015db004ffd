"""Input discovery and sample I/O: webdataset tars, image folders, official jsonl splits; deterministic tar writing.

Output shard format (read by ``bitwise_ar`` training): a POSIX tar whose members are sorted by name (so the members
of one sample are adjacent), all with mtime 0, uid/gid 0 and mode 0644, holding per sample ``<key>.jpg|png|webp``
(image bytes), ``<key>.txt`` (caption, UTF-8) and ``<key>.json`` (metadata, see :func:`sample_metadata`). Keys contain
no dots or slashes. The same kept samples always produce byte-identical tars.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import InputConfig

__all__ = [
    "IMAGE_EXTENSIONS",
    "KeptSample",
    "ShardRef",
    "TruncatedShardError",
    "discover_shards",
    "iter_shard",
    "read_shard",
    "read_tar_samples",
    "sample_metadata",
    "sanitize_key",
    "shard_keys",
    "write_tar",
]

IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def sanitize_key(text: str) -> str:
    """A webdataset-safe key: only letters, digits, ``_`` and ``-`` (dots would split the sample)."""
    key = _KEY_UNSAFE.sub("_", text).strip("_")
    return key or "sample"


@dataclass(frozen=True, kw_only=True)
class ShardRef:
    """One input shard, the unit of work and of commit. ``start``/``stop`` select images or lines of a folder/jsonl."""

    index: int
    name: str
    kind: str  # "webdataset" | "folder" | "jsonl"
    path: str
    start: int = 0
    stop: int = 0
    image_root: str = ""

    def as_row(self) -> dict[str, Any]:
        return {
            "shard_index": self.index,
            "shard_name": self.name,
            "kind": self.kind,
            "path": self.path,
            "start": self.start,
            "stop": self.stop,
            "image_root": self.image_root,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ShardRef:
        return cls(
            index=int(row["shard_index"]),
            name=str(row["shard_name"]),
            kind=str(row["kind"]),
            path=str(row["path"]),
            start=int(row["start"]),
            stop=int(row["stop"]),
            image_root=str(row["image_root"]),
        )


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def _detect_format(path: Path) -> str:
    if path.is_file():
        if path.suffix == ".tar":
            return "webdataset"
        if path.suffix == ".jsonl":
            return "jsonl"
        raise ValueError(f"input path {str(path)!r} is neither a .tar shard nor a .jsonl split file")
    if any(path.glob("*.tar")):
        return "webdataset"
    if any(path.glob("*.jsonl")):
        return "jsonl"
    if _image_files(path):
        return "folder"
    raise ValueError(f"input folder {str(path)!r} holds no .tar shards, .jsonl splits or images")


def discover_shards(config: InputConfig) -> list[ShardRef]:
    """All input shards of ``config.paths`` in a deterministic order, with unique names.

    Raises FileNotFoundError for a missing path and ValueError for unusable inputs or clashing shard names.
    """
    refs: list[ShardRef] = []

    def add(name: str, kind: str, path: Path, start: int = 0, stop: int = 0) -> None:
        refs.append(
            ShardRef(index=len(refs), name=sanitize_key(name), kind=kind, path=str(path.resolve()), start=start,
                     stop=stop, image_root=config.image_root)
        )

    for raw in config.paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"input path {str(path)!r} does not exist; fix input.paths in the config or override it")
        kind = _detect_format(path) if config.format == "auto" else config.format
        if kind == "webdataset":
            files = [path] if path.is_file() else sorted(path.glob("*.tar"))
            for file in files:
                add(file.stem, kind, file)
        elif kind == "jsonl":
            files = [path] if path.is_file() else sorted(path.glob("*.jsonl"))
            for file in files:
                total = _count_lines(file)
                for chunk, start in enumerate(range(0, max(total, 1), config.samples_per_shard)):
                    add(f"{file.stem}-{chunk:05d}", kind, file, start, min(total, start + config.samples_per_shard))
        elif kind == "folder":
            if not path.is_dir():
                raise ValueError(f"input.format='folder' needs a directory, got file {str(path)!r}")
            total = len(_image_files(path))
            for chunk, start in enumerate(range(0, max(total, 1), config.samples_per_shard)):
                add(f"{path.name}-{chunk:05d}", kind, path, start, min(total, start + config.samples_per_shard))
        else:  # pragma: no cover - InputConfig validates the format
            raise ValueError(f"unknown input format {kind!r}")
    names = [r.name for r in refs]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(
            f"input shards share names {clashes[:5]}; output files are named after input shards, so give the "
            "clashing files distinct names or curate the folders in separate runs"
        )
    return refs


# ---------------------------------------------------------------------------------------------------- reading


def _row(ref: ShardRef, key: str, image: bytes, caption: str, source: dict[str, Any], error: str = "") -> dict[str, Any]:
    return {
        "shard_index": ref.index,
        "shard_name": ref.name,
        "key": key,
        "image": image,
        "caption": caption,
        "source_json": json.dumps(source, ensure_ascii=False, sort_keys=True),
        "read_error": error,
    }


class TruncatedShardError(tarfile.ReadError):
    """A tar ends before its end-of-archive marker (cut inside a header or a data block) or has a broken header."""


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    try:
        data = handle.read() if handle else b""
    except tarfile.ReadError as exc:  # "unexpected end of data": the file ends inside this member's data
        raise TruncatedShardError(f"the archive ends inside the data of {member.name!r} ({exc})") from exc
    if len(data) != member.size:
        raise TruncatedShardError(f"member {member.name!r} is cut short: {len(data)} of {member.size} bytes")
    return data


def _check_end(tar: tarfile.TarFile, size: int) -> None:
    # tarfile stops silently at a header it cannot read (cut short, or garbage) once a member was read, so look at
    # where it stopped: a well-formed archive has a zero block there (its end-of-archive marker).
    tar.fileobj.seek(tar.offset)
    marker = tar.fileobj.read(tarfile.BLOCKSIZE)
    if len(marker) < tarfile.BLOCKSIZE:
        raise TruncatedShardError(f"the archive ends at byte {size} inside a header or without an end-of-archive marker")
    if marker.count(0) != tarfile.BLOCKSIZE:
        raise TruncatedShardError(f"unreadable tar header at byte {tar.offset}")


def read_tar_samples(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Samples of a webdataset tar as ``(key, {extension: bytes})``, streamed in file order.

    A sample is a run of adjacent members with the same key (the webdataset convention). A key that comes back later,
    or a member whose extension the current sample already has, starts a new sample with the same key: every sample
    is yielded, and callers that need unique keys rename the repeats (:func:`read_shard` does).

    Damage raises ``tarfile.ReadError`` after every sample before it was yielded: :class:`TruncatedShardError` for a
    tar cut inside a data block (the sample being read is not yielded), cut inside or before a header, or with a
    broken header (the samples read whole so far are yielded, the last one with the members it had before the cut).
    """
    size = os.path.getsize(path)
    key: str | None = None
    files: dict[str, bytes] = {}
    with tarfile.open(path, "r") as tar:
        for member in tar:
            if not member.isfile():
                continue
            directory, _, base = member.name.rpartition("/")
            stem, dot, ext = base.partition(".")
            if not dot:
                continue
            member_key = f"{directory}/{stem}" if directory else stem
            ext = ext.lower()
            if key is not None and (member_key != key or ext in files):
                yield key, files
                key, files = None, {}
            data = _read_member(tar, member)
            key = member_key
            files[ext] = data
        if key is not None:
            yield key, files
        _check_end(tar, size)


def _webdataset_row(ref: ShardRef, key: str, files: dict[str, bytes]) -> dict[str, Any]:
    source: dict[str, Any] = {}
    if "json" in files:
        try:
            loaded = json.loads(files["json"].decode("utf-8"))
            source = loaded if isinstance(loaded, dict) else {"json": loaded}
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            source = {}
    caption = ""
    for ext in ("txt", "caption"):
        if ext in files:
            caption = files[ext].decode("utf-8", errors="replace").strip()
            break
    else:
        caption = str(source.get("caption") or source.get("long_caption") or "")
    image_ext = next((e for e in IMAGE_EXTENSIONS if e in files), None)
    if image_ext is None:
        return _row(ref, sanitize_key(key), b"", caption, source, "missing_image")
    return _row(ref, sanitize_key(key), files[image_ext], caption, source)


def _read_webdataset(ref: ShardRef) -> Iterator[dict[str, Any]]:
    count = 0
    samples = read_tar_samples(ref.path)
    while True:
        try:
            key, files = next(samples)
        except StopIteration:
            return
        except (tarfile.TarError, EOFError, OSError) as exc:
            # Everything before the damage was yielded; one row stands for the unreadable rest of the shard.
            kind = "truncated_shard" if count or isinstance(exc, TruncatedShardError) else "unreadable_shard"
            yield _row(ref, sanitize_key(f"{ref.name}__{kind}"), b"", "", {"error": str(exc)}, kind)
            return
        count += 1
        yield _webdataset_row(ref, key, files)


def _read_folder(ref: ShardRef) -> Iterator[dict[str, Any]]:
    root = Path(ref.path)
    for image_path in _image_files(root)[ref.start : ref.stop]:
        rel = image_path.relative_to(root).with_suffix("")
        caption_path = image_path.with_suffix(".txt")
        json_path = image_path.with_suffix(".json")
        caption = caption_path.read_text(encoding="utf-8", errors="replace").strip() if caption_path.is_file() else ""
        source: dict[str, Any] = {"image_path": str(image_path)}
        if json_path.is_file():
            try:
                loaded = json.loads(json_path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    source.update(loaded)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                pass
        try:
            data = image_path.read_bytes()
        except OSError:
            yield _row(ref, sanitize_key(str(rel)), b"", caption, source, "missing_file")
        else:
            yield _row(ref, sanitize_key(str(rel)), data, caption, source)


def _read_jsonl(ref: ShardRef) -> Iterator[dict[str, Any]]:
    stem = sanitize_key(Path(ref.path).stem)
    root = Path(ref.image_root) if ref.image_root else Path.cwd()
    with open(ref.path, encoding="utf-8", errors="replace") as f:
        lines = (line for line in f if line.strip())
        for number, line in enumerate(itertools.islice(lines, ref.start, ref.stop), start=ref.start):
            yield _jsonl_row(ref, f"{stem}-{number:09d}", number, line, root)


def _jsonl_row(ref: ShardRef, key: str, number: int, line: str, root: Path) -> dict[str, Any]:
    try:
        item = json.loads(line)
        if not isinstance(item, dict) or "image_path" not in item:
            raise ValueError("no image_path")
    except (ValueError, RecursionError):
        return _row(ref, key, b"", "", {"line": number}, "bad_json_line")
    caption = str(item.get("long_caption") or item.get("text") or "")
    image_path = Path(str(item["image_path"]))
    if not image_path.is_absolute():
        image_path = root / image_path
    try:
        return _row(ref, key, image_path.read_bytes(), caption, item)
    except OSError:
        return _row(ref, key, b"", caption, item, "missing_file")


def iter_shard(ref: ShardRef) -> Iterator[dict[str, Any]]:
    """The samples of a shard as rows (``key``, ``image`` bytes, ``caption``, ``source_json``, ``read_error``, ...),
    streamed: each row is yielded as soon as it is read.

    Every row carries ``order`` (position in the shard); the last row of a shard carries ``shard_size`` (the number
    of rows), all others ``shard_size = 0``, so a consumer that receives rows out of order still knows when a shard is
    complete. Keys are unique within a shard: a repeated key (the same key twice in a tar, or two names that sanitize
    to the same key) is kept under ``<key>-dup<n>``, the first unused n, in reading order. An empty shard yields one
    placeholder row with ``read_error = "empty_shard"`` so that the shard still completes (it is not counted as a
    sample).
    """
    reader = {"webdataset": _read_webdataset, "folder": _read_folder, "jsonl": _read_jsonl}[ref.kind]
    used: set[str] = set()
    previous: dict[str, Any] | None = None
    for order, row in enumerate(reader(ref)):
        key, suffix = row["key"], 0
        while key in used:
            suffix += 1
            key = f"{row['key']}-dup{suffix}"
        used.add(key)
        row["key"] = key
        row["order"] = order
        row["shard_size"] = 0
        if previous is not None:
            yield previous
        previous = row
    if previous is None:
        previous = _row(ref, sanitize_key(f"{ref.name}__empty"), b"", "", {}, "empty_shard")
        previous["order"] = 0
    previous["shard_size"] = previous["order"] + 1
    yield previous


def read_shard(ref: ShardRef) -> list[dict[str, Any]]:
    """All rows of :func:`iter_shard` as a list, each with ``shard_size`` set to the number of rows."""
    rows = list(iter_shard(ref))
    for row in rows:
        row["shard_size"] = len(rows)
    return rows


# ---------------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True, kw_only=True)
class KeptSample:
    """A sample to write: image bytes + extension, caption, metadata."""

    key: str
    image: bytes
    image_ext: str
    caption: str
    metadata: dict[str, Any]


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info, io.BytesIO(data)


def write_tar(path: str | os.PathLike[str], samples: Iterable[KeptSample]) -> int:
    """Write samples as a deterministic webdataset tar (members sorted by name). Returns the number of samples."""
    members: list[tuple[str, bytes]] = []
    count = 0
    for sample in samples:
        count += 1
        members.append((f"{sample.key}.{sample.image_ext}", sample.image))
        members.append((f"{sample.key}.txt", sample.caption.encode("utf-8")))
        metadata = json.dumps(sample.metadata, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        members.append((f"{sample.key}.json", metadata.encode("utf-8")))
    members.sort(key=lambda m: m[0])
    with open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info, handle = _member(name, data)
            tar.addfile(info, handle)
    return count


def shard_keys(path: str | os.PathLike[str]) -> list[str]:
    """Sample keys of a tar written by :func:`write_tar` (in file order)."""
    return [key for key, _ in read_tar_samples(path)]


def sample_metadata(
    *, key: str, width: int, height: int, template: float, sha256: str, phash: str, source_shard: str,
    reencoded: bool, scores: dict[str, float], source: dict[str, Any],
) -> dict[str, Any]:
    """The ``<key>.json`` of an output sample (the contract with the trainer's reader)."""
    return {
        "key": key,
        "width": width,
        "height": height,
        "h_div_w": height / width,
        "h_div_w_template": template,
        "template": f"{template:.3f}",
        "sha256": sha256,
        "phash": phash,
        "source_shard": source_shard,
        "reencoded": reencoded,
        "scores": scores,
        "source": source,
    }
