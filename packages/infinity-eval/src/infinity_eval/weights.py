"""The weights manifest: which local files each metric needs, where they come from, and checksum verification.

Nothing is ever downloaded by this package. ``infinity-eval weights`` lists the files and verifies local copies:
entries with a pinned sha256 (prefix) are checked against it; others are reported with their computed sha256, which
``--pin`` writes to ``weights.lock.json`` under the weights root so later runs verify against it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_FILE = "weights.lock.json"


@dataclass(frozen=True, kw_only=True)
class WeightsConfig:
    """Where each metric's local weights are; unset entries default to the standard names under ``root``."""

    root: Path = Path("~/.cache/infinity-eval/weights")
    fid_inception: Path | None = None
    clip: Path | None = None
    geneval_detector: Path | None = None
    imagereward: Path | None = None
    hps_checkpoint: Path | None = None
    hps_tokenizer: Path | None = None
    dpg_vqa: Path | None = None
    dpg_questions: Path | None = None

    def path(self, name: str) -> Path:
        """Resolved path of one entry (see :data:`MANIFEST` for the standard layout)."""
        explicit = getattr(self, name)
        if explicit is not None:
            return Path(explicit).expanduser()
        return Path(self.root).expanduser() / MANIFEST[name].relative_path


@dataclass(frozen=True, kw_only=True)
class WeightEntry:
    """One weights item: a file, or a folder that must contain ``files``."""

    name: str
    metrics: tuple[str, ...]
    relative_path: str
    source: str
    files: tuple[str, ...] = ()
    sha256_prefix: str | None = None
    note: str = ""


MANIFEST: dict[str, WeightEntry] = {
    e.name: e
    for e in (
        WeightEntry(name="fid_inception", metrics=("fid",), relative_path="pt_inception-2015-12-05-6726825d.pth",
                    source="github.com/mseitzer/pytorch-fid releases 'fid_weights' (same tensors as torch-fidelity's "
                           "weights-inception-2015-12-05-6726825d.pth)", sha256_prefix="6726825d"),
        WeightEntry(name="clip", metrics=("clip", "geneval"), relative_path="clip-vit-large-patch14",
                    source="Hugging Face openai/clip-vit-large-patch14 (save_pretrained folder incl. tokenizer)",
                    files=("config.json", "model.safetensors", "tokenizer.json")),
        WeightEntry(name="geneval_detector", metrics=("geneval",), relative_path="mask2former-swin-s-coco-instance",
                    source="GenEval's mmdet mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco checkpoint converted to a "
                           "transformers Mask2FormerForUniversalSegmentation folder",
                    files=("config.json", "model.safetensors"),
                    note="other Mask2Former COCO weights work but are a different metric (label them geneval_hfm2f)"),
        WeightEntry(name="imagereward", metrics=("imagereward",), relative_path="ImageReward",
                    source="Hugging Face THUDM/ImageReward (ImageReward.pt, med_config.json) + bert-base-uncased "
                           "tokenizer files", files=("ImageReward.pt", "med_config.json", "vocab.txt")),
        WeightEntry(name="hps_checkpoint", metrics=("hpsv21",), relative_path="HPS_v2.1_compressed.pt",
                    source="Hugging Face xswu/HPSv2 HPS_v2.1_compressed.pt"),
        WeightEntry(name="hps_tokenizer", metrics=("hpsv21",), relative_path="clip-vit-large-patch14",
                    source="any CLIP BPE tokenizer folder (the OpenAI vocabulary open_clip ViT-H-14 uses)",
                    files=("tokenizer.json",)),
        WeightEntry(name="dpg_vqa", metrics=("dpg_blip",), relative_path="blip-vqa-base",
                    source="Hugging Face Salesforce/blip-vqa-base (save_pretrained folder incl. processor)",
                    files=("config.json",),
                    note="not DPG-Bench's mPLUG: its numbers are dpg_blip, not comparable with published DPG"),
        WeightEntry(name="dpg_questions", metrics=("dpg_blip",), relative_path="dpg_bench.csv",
                    source="TencentQQGYLab/ELLA dpg_bench/dpg_bench.csv (the question graph, Apache-2.0)"),
    )
}


def entries_for(metric: str) -> list[WeightEntry]:
    """Manifest entries a metric needs (empty for weight-free metrics such as ``shapes``)."""
    return [e for e in MANIFEST.values() if metric in e.metrics]


def missing_files(entry: WeightEntry, path: Path) -> list[Path]:
    """Files of ``entry`` absent at ``path``."""
    if not entry.files:
        return [] if path.is_file() else [path]
    if not path.is_dir():
        return [path / f for f in entry.files]
    missing = []
    for f in entry.files:
        if (path / f).exists():
            continue
        # Accept sharded safetensors and slow-tokenizer vocab files as equivalents.
        if f == "model.safetensors" and list(path.glob("*.safetensors")):
            continue
        if f == "tokenizer.json" and ((path / "vocab.json").is_file() or (path / "vocab.txt").is_file()):
            continue
        missing.append(path / f)
    return missing


def check_present(metric: str, weights: WeightsConfig) -> None:
    """Raise ``FileNotFoundError`` listing every missing file of ``metric`` (fast; no hashing, no download)."""
    missing = [str(p) for e in entries_for(metric) for p in missing_files(e, weights.path(e.name))]
    if missing:
        raise FileNotFoundError(f"weights for metric {metric!r} missing: {', '.join(missing)}. "
                                "Run `infinity-eval weights` for the sources.")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def entry_digest(entry: WeightEntry, path: Path) -> str:
    """sha256 of a file entry, or of the sorted (name, sha256) list of a folder's files."""
    if not entry.files:
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path)}\t{sha256_file(f)}\n".encode())
    return h.hexdigest()


def verify(weights: WeightsConfig, metrics: list[str] | None = None, *, pin: bool = False) -> list[dict[str, Any]]:
    """Status of every (selected) entry: ``missing``, ``ok``, ``mismatch`` or ``unpinned``, with the computed sha256."""
    root = Path(weights.root).expanduser()
    lock_path = root / LOCK_FILE
    lock = json.loads(lock_path.read_text()) if lock_path.is_file() else {}
    report = []
    for entry in MANIFEST.values():
        if metrics and not set(entry.metrics) & set(metrics):
            continue
        path = weights.path(entry.name)
        row: dict[str, Any] = {"name": entry.name, "metrics": list(entry.metrics), "path": str(path), "source": entry.source}
        missing = missing_files(entry, path)
        if missing:
            row.update(status="missing", missing=[str(m) for m in missing])
        else:
            digest = entry_digest(entry, path)
            row["sha256"] = digest
            pinned = lock.get(entry.name) or entry.sha256_prefix
            if pinned is None:
                row["status"] = "unpinned"
            else:
                row["status"] = "ok" if digest.startswith(pinned) else "mismatch"
                row["expected"] = pinned
            if pin:
                lock[entry.name] = digest
        report.append(row)
    if pin:
        root.mkdir(parents=True, exist_ok=True)
        lock_path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    return report
