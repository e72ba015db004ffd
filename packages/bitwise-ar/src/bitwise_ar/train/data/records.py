"""Training records from the official jsonl split folders and from webdataset tar shards.

Both sources become a table of :class:`Record` objects that can be read in any order, so batches can be planned
up front (one aspect-ratio template per batch) and a run can resume from an exact position.

Official split format (FoundationVision/Infinity ``data/infinity_toy_data/splits``): files named
``<h_div_w_template>_<num_examples>.jsonl`` (e.g. ``1.500_000002500.jsonl``), one JSON object per line with
``image_path``, ``h_div_w``, ``long_caption`` and optionally ``text`` (short caption).

Webdataset shards: ``.tar`` files whose members share a key: ``<key>.jpg|jpeg|png|webp`` (the image),
``<key>.txt`` (caption) and optionally ``<key>.json`` (``h_div_w``, ``long_caption``, ``text``...).
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
_SPLIT_NAME = re.compile(r"^(\d+(?:\.\d+)?)_(\d+)$")


@dataclass(frozen=True, kw_only=True)
class Record:
    """One image-caption pair. ``image`` is a file path, or ``(tar_path, offset, size)`` for a tar member."""

    image: str | tuple[str, int, int]
    h_div_w: float
    long_caption: str
    short_caption: str | None = None

    def read_bytes(self) -> bytes:
        """The encoded image bytes (raises FileNotFoundError / OSError when missing or unreadable)."""
        if isinstance(self.image, str):
            return Path(self.image).read_bytes()
        tar_path, offset, size = self.image
        with open(tar_path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        if len(data) != size:
            raise OSError(f"truncated tar member in {tar_path} at offset {offset}")
        return data


@dataclass(kw_only=True)
class RecordTable:
    """All records of a source, plus what was skipped while indexing and why."""

    records: list[Record]
    skipped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.records)


@dataclass(frozen=True, kw_only=True)
class SplitFile:
    """A jsonl split file and what its name declares."""

    path: Path
    template: float
    num_examples: int


def parse_split_name(path: str | Path) -> SplitFile:
    """Parse ``<h_div_w_template>_<num_examples>.jsonl``; raises ValueError naming the expected pattern."""
    path = Path(path)
    match = _SPLIT_NAME.match(path.stem)
    if path.suffix != ".jsonl" or match is None:
        raise ValueError(
            f"split file {path.name!r} is not named '<h_div_w_template>_<num_examples>.jsonl' "
            f"(e.g. '1.000_000002500.jsonl')"
        )
    return SplitFile(path=path, template=float(match.group(1)), num_examples=int(match.group(2)))


def _resolve_image(image_path: str, roots: list[Path]) -> Path | None:
    candidate = Path(image_path)
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for root in roots:
        if (root / candidate).is_file():
            return root / candidate
    return None


def read_split_folder(folder: str | Path, *, check_images: bool = True) -> RecordTable:
    """Read every ``*.jsonl`` split of an official split folder.

    ``image_path`` entries may be absolute or relative to: the dataset folder (the splits folder's parent), the
    official code's repository root (two levels above the dataset folder, as in the toy data), or the current
    directory. Lines whose image is missing or whose JSON is broken are skipped and counted (``skipped``), never fatal.

    Raises:
        FileNotFoundError: the folder does not exist or holds no ``*.jsonl`` file.
        ValueError: a split file name does not follow the convention, or its line count differs from its name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"split folder {folder} does not exist")
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no '<template>_<count>.jsonl' split files in {folder}")
    dataset_root = folder.parent
    roots = [dataset_root, dataset_root.parent.parent, dataset_root.parent, Path.cwd()]
    table = RecordTable(records=[])
    for file in files:
        split = parse_split_name(file)
        lines = [line for line in file.read_text().splitlines() if line.strip()]
        if len(lines) != split.num_examples:
            raise ValueError(
                f"split file {file.name} declares {split.num_examples} examples but has {len(lines)} lines; rename it to "
                f"'{file.stem.split('_')[0]}_{len(lines):09d}.jsonl' or fix its content"
            )
        resolved: dict[str, Path | None] = {}
        for number, line in enumerate(lines, 1):
            try:
                item = json.loads(line)
                image_path, h_div_w, caption = item["image_path"], float(item["h_div_w"]), item["long_caption"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                logger.warning("%s line %d: not a valid record, skipped", file.name, number)
                table.skipped["bad_line"] += 1
                continue
            if image_path not in resolved:
                resolved[image_path] = _resolve_image(image_path, roots) if check_images else Path(image_path)
            path = resolved[image_path]
            if path is None:
                table.skipped["missing_image"] += 1
                continue
            table.records.append(
                Record(image=str(path), h_div_w=h_div_w, long_caption=str(caption), short_caption=item.get("text"))
            )
    if table.skipped:
        logger.warning("skipped while indexing %s: %s", folder, dict(table.skipped))
    return table


def read_webdataset(shards: str | Path | list[str | Path]) -> RecordTable:
    """Index webdataset ``.tar`` shards (a folder, one shard, or a list) without decoding any image.

    The aspect ratio comes from ``<key>.json``'s ``h_div_w`` when present, else from the image header.
    Samples without an image or without a caption are skipped and counted.
    """
    from PIL import Image

    if isinstance(shards, (str, Path)):
        shards = sorted(Path(shards).glob("*.tar")) if Path(shards).is_dir() else [Path(shards)]
    paths = [Path(s) for s in shards]
    if not paths:
        raise FileNotFoundError("no webdataset .tar shards given (a folder of *.tar, a .tar file or a list)")
    table = RecordTable(records=[])
    for shard in paths:
        if not shard.is_file():
            raise FileNotFoundError(f"webdataset shard {shard} does not exist")
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        with tarfile.open(shard, "r:") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            for member in members:
                name = Path(member.name).name
                key, _, ext = name.partition(".")
                samples.setdefault(str(Path(member.name).parent / key), {})["." + ext.lower()] = member
            for key, parts in samples.items():
                image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
                meta = json.loads(tar.extractfile(parts[".json"]).read()) if ".json" in parts else {}
                caption = tar.extractfile(parts[".txt"]).read().decode().strip() if ".txt" in parts else None
                caption = caption or meta.get("long_caption") or meta.get("caption")
                if image is None or not caption:
                    table.skipped["incomplete_sample"] += 1
                    logger.warning("%s: sample %s has no image or caption, skipped", shard.name, key)
                    continue
                h_div_w = meta.get("h_div_w")
                if h_div_w is None:
                    try:
                        with Image.open(io.BytesIO(tar.extractfile(image).read())) as im:
                            h_div_w = im.height / im.width
                    except OSError:
                        table.skipped["corrupt_image"] += 1
                        continue
                table.records.append(
                    Record(
                        image=(str(shard), image.offset_data, image.size),
                        h_div_w=float(h_div_w),
                        long_caption=str(caption),
                        short_caption=meta.get("text"),
                    )
                )
    return table


def load_records(source: str | Path, *, format: str = "auto") -> RecordTable:
    """Index a data source: ``format`` is ``"jsonl"`` (official split folder), ``"webdataset"`` or ``"auto"``."""
    path = Path(source)
    if format == "auto":
        if path.suffix == ".tar" or (path.is_dir() and any(path.glob("*.tar"))):
            format = "webdataset"
        elif path.is_dir() and (path / "splits").is_dir() and not any(path.glob("*.jsonl")):
            path, format = path / "splits", "jsonl"
        else:
            format = "jsonl"
    if format == "jsonl":
        return read_split_folder(path)
    if format == "webdataset":
        return read_webdataset(path)
    raise ValueError(f"unknown data format {format!r}; use 'jsonl', 'webdataset' or 'auto'")
