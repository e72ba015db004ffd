"""FID/KID between image folders (or a folder and stored reference statistics)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from infinity_eval.fid.inception import FIDInceptionV3, load_fid_inception
from infinity_eval.fid.preprocess import FIDMode, check_mode, preprocess_for_fid
from infinity_eval.fid.stats import FeatureStats, fid_from_stats, kernel_inception_distance
from infinity_eval.images import list_images, load_rgb_array

logger = logging.getLogger(__name__)

EXTRACTOR_ID = "inception-2015-12-05-pool3"


@torch.no_grad()
def extract_features(
    model: FIDInceptionV3,
    images: Sequence[str | Path | np.ndarray],
    *,
    mode: FIDMode = "clean",
    batch_size: int = 32,
    progress: bool = True,
) -> np.ndarray:
    """Pool3 features ``(N, 2048)`` float32 for image paths or uint8 ``(H, W, 3)`` arrays, in input order."""
    check_mode(mode)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    for start in tqdm(range(0, len(images), batch_size), desc=f"FID features ({mode})", disable=not progress):
        batch = []
        for item in images[start : start + batch_size]:
            array = item if isinstance(item, np.ndarray) else load_rgb_array(item)
            if array.dtype != np.uint8:
                raise ValueError(f"FID inputs must be uint8 RGB arrays, got dtype {array.dtype}")
            batch.append(preprocess_for_fid(array, mode))
        x_B3HW = torch.stack(batch).to(device)
        out.append(model(x_B3HW).double().cpu().numpy().astype(np.float32))
    if not out:
        return np.zeros((0, 2048), dtype=np.float32)
    return np.concatenate(out)


def folder_stats(folder: str | Path, model: FIDInceptionV3, *, mode: FIDMode = "clean", batch_size: int = 32,
                 progress: bool = True) -> tuple[FeatureStats, np.ndarray]:
    """Statistics and features of every image under ``folder`` (recursive, sorted by path)."""
    feats = extract_features(model, list_images(folder, recursive=True), mode=mode, batch_size=batch_size, progress=progress)
    return FeatureStats.from_features(feats), feats


@dataclass(frozen=True, kw_only=True)
class FIDResult:
    """FID (and KID when both feature sets are available) with the settings that define it."""

    fid: float
    kid_mean: float | None
    kid_std: float | None
    num_pred: int
    num_ref: int
    mode: str

    def metrics(self, prefix: str = "fid") -> dict[str, float]:
        """Metric keys naming the mode and N, e.g. ``fid/clean/N_30000`` (MLflow keys allow no @ or =)."""
        out = {f"{prefix}/{self.mode}/N_{self.num_pred}": self.fid}
        if self.kid_mean is not None:
            out[f"kid/{self.mode}/N_{self.num_pred}"] = self.kid_mean
            out[f"kid/{self.mode}/N_{self.num_pred}/std"] = float(self.kid_std or 0.0)
        return out


def compute_fid(
    pred: str | Path,
    reference: str | Path,
    *,
    weights: str | Path,
    mode: FIDMode = "clean",
    batch_size: int = 32,
    kid_seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> FIDResult:
    """FID between the images in ``pred`` and ``reference`` (a folder, or an ``.npz`` from :meth:`FeatureStats.save`).

    KID is reported only when the reference is a folder (it needs features, not moments).
    """
    check_mode(mode)
    model = load_fid_inception(weights, device=device)
    pred_stats, pred_feats = folder_stats(pred, model, mode=mode, batch_size=batch_size, progress=progress)
    reference = Path(reference)
    if reference.is_file():
        ref_stats = FeatureStats.load(reference, extractor=EXTRACTOR_ID, mode=mode)
        ref_feats = None
    else:
        ref_stats, ref_feats = folder_stats(reference, model, mode=mode, batch_size=batch_size, progress=progress)
    if pred_stats.count < 2 or ref_stats.count < 2:
        raise ValueError("FID needs at least 2 images on each side")
    kid = (kernel_inception_distance(pred_feats, ref_feats, seed=kid_seed) if ref_feats is not None else (None, None))
    return FIDResult(fid=fid_from_stats(pred_stats, ref_stats), kid_mean=kid[0], kid_std=kid[1],
                     num_pred=pred_stats.count, num_ref=ref_stats.count, mode=mode)
