"""Object detectors for GenEval behind one interface, and the transformers Mask2Former implementation.

A detector maps an RGB image to raw detections per GenEval class name (no threshold applied). The transformers path
replicates the mmdetection 2.x test pipeline and Mask2Former instance post-processing that GenEval was tuned on:
keep-ratio resize to fit (1333, 800), ImageNet mean/std on 0–255 RGB, zero padding to a multiple of 32; then
top-k over the query×class softmax (no-object column dropped), masks upsampled to the padded input, cropped, resized
to the original image, binarised at logit 0, mask score = mean sigmoid inside the mask, final score = class
probability × mask score, and boxes = the binarised masks' extents. Class index ``i`` is GenEval's
``object_names.txt`` line ``i`` (COCO order).

Weights: the published GenEval score used the mmdet checkpoint ``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco``;
a transformers folder holding *those* weights (converted by ``infinity-eval convert-geneval-detector``, which records
``geneval_checkpoint: true`` in its ``conversion.json``) reproduces it and is reported as ``geneval``. Other
Mask2Former checkpoints (e.g. the detectron2-trained COCO models) are a different metric, reported as
``geneval_hfm2f`` (:func:`infinity_eval.geneval_convert.geneval_metric_name`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from infinity_eval.clip_models import check_model_dir, require_transformers
from infinity_eval.geneval.prompts import object_names
from infinity_eval.geneval.scoring import Detection

logger = logging.getLogger(__name__)

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


class Detector(Protocol):
    """Anything that returns raw per-class detections for one image."""

    name: str

    def __call__(self, image: Image.Image) -> dict[str, list[Detection]]: ...


def rescale_size(width: int, height: int, scale: tuple[int, int] = (1333, 800)) -> tuple[int, int]:
    """mmcv ``imrescale`` keep-ratio size: the largest factor fitting long ≤ max(scale), short ≤ min(scale)."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(width, height), short_edge / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def mmdet_preprocess(image: Image.Image, *, scale: tuple[int, int] = (1333, 800), divisor: int = 32) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize (bilinear), normalise, pad; returns ``(1, 3, Hp, Wp)`` and the resized ``(h, w)`` before padding."""
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
    new_w, new_h = rescale_size(image.width, image.height, scale)
    x = F.interpolate(rgb, size=(new_h, new_w), mode="bilinear", align_corners=False).round().clamp(0, 255)
    x = (x - torch.tensor(IMAGENET_MEAN_255)[:, None, None]) / torch.tensor(IMAGENET_STD_255)[:, None, None]
    pad_h, pad_w = -new_h % divisor, -new_w % divisor
    return F.pad(x, (0, pad_w, 0, pad_h)), (new_h, new_w)


def masks_to_boxes(masks_QHW: torch.Tensor) -> torch.Tensor:
    """``(Q, 4)`` boxes ``x1, y1, x2 + 1, y2 + 1`` of binary masks (zeros for empty masks)."""
    boxes = torch.zeros(masks_QHW.shape[0], 4)
    for i, mask in enumerate(masks_QHW):
        ys, xs = torch.where(mask > 0)
        if len(xs):
            boxes[i] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    return boxes


def instance_postprocess(class_logits_QC1: torch.Tensor, mask_logits_QHW: torch.Tensor, *, max_per_image: int = 100
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """mmdet-style Mask2Former instances: (labels, scores, boxes, binary masks) for the top-k query×class pairs."""
    num_classes = class_logits_QC1.shape[1] - 1
    scores_QC = F.softmax(class_logits_QC1, dim=-1)[:, :-1]
    k = min(max_per_image, scores_QC.numel())
    top_scores, top_index = scores_QC.flatten().topk(k, sorted=False)
    labels = top_index % num_classes
    queries = top_index // num_classes
    mask_logits = mask_logits_QHW[queries]
    binary = (mask_logits > 0).float()
    mask_scores = (mask_logits.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    return labels, top_scores * mask_scores, masks_to_boxes(binary), binary.bool()


class Mask2FormerDetector:
    """transformers ``Mask2FormerForUniversalSegmentation`` with mmdet 2.x pre/post-processing (80 COCO classes)."""

    def __init__(self, model: Any, *, name: str = "geneval", max_per_image: int = 100) -> None:
        num_labels = int(model.config.num_labels)
        self.classnames = object_names()
        if num_labels != len(self.classnames):
            raise ValueError(f"detector has {num_labels} classes, GenEval needs {len(self.classnames)} (COCO things)")
        self.model = model
        self.name = name
        self.max_per_image = max_per_image

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, *, device: str = "cpu", name: str = "geneval") -> Mask2FormerDetector:
        """Load a local ``save_pretrained`` folder (no hub access)."""
        transformers = require_transformers()
        model_dir = check_model_dir(model_dir, "Mask2Former detector")
        model = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(model_dir, local_files_only=True)
        return cls(model.to(device).eval(), name=name)

    @torch.no_grad()
    def __call__(self, image: Image.Image) -> dict[str, list[Detection]]:
        pixels, (new_h, new_w) = mmdet_preprocess(image)
        out = self.model(pixel_values=pixels.to(next(self.model.parameters()).device))
        mask_logits = out.masks_queries_logits[0].float().cpu()
        mask_logits = F.interpolate(mask_logits[None], size=pixels.shape[-2:], mode="bilinear", align_corners=False)[0]
        mask_logits = mask_logits[:, :new_h, :new_w]
        mask_logits = F.interpolate(mask_logits[None], size=(image.height, image.width), mode="bilinear",
                                    align_corners=False)[0]
        labels, scores, boxes, masks = instance_postprocess(out.class_queries_logits[0].float().cpu(), mask_logits,
                                                            max_per_image=self.max_per_image)
        detections: dict[str, list[Detection]] = {}
        for label, score, box, mask in zip(labels.tolist(), scores.tolist(), boxes.tolist(), masks.numpy()):
            detections.setdefault(self.classnames[label], []).append(
                Detection(box=tuple(box), score=float(score), mask=mask))  # type: ignore[arg-type]
        return detections
