"""EfficientNet-B3 written out in torch, with the parameter names of timm's ``efficientnet_b3`` / ``efficientnet_b3a``.

The LAION-5B watermark detector is timm ``efficientnet_b3a`` whose classifier is replaced by
Linear(1536, 625) - ReLU - Dropout(0.3) - Linear(625, 256) - ReLU - Linear(256, 2); its state dict loads into
:class:`WatermarkNet` unchanged. Architecture (Tan & Le 2019, width x1.2, depth x1.4, ``ceil`` depth rounding):
stem 40 ch; stages (type, kernel, stride, out ch, repeats) = ds 3 1 24 2 | ir 3 2 32 3 | ir 5 2 48 3 | ir 3 2 96 5 |
ir 5 1 136 5 | ir 5 2 232 6 | ir 3 1 384 2; expansion 6; squeeze-excite to 1/4 of the block input; head 1536 ch; SiLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["B3_STAGES", "EfficientNetB3", "WatermarkNet"]

# (block type, kernel, stride, out channels, repeats) per stage of EfficientNet-B3.
B3_STAGES: tuple[tuple[str, int, int, int, int], ...] = (
    ("ds", 3, 1, 24, 2),
    ("ir", 3, 2, 32, 3),
    ("ir", 5, 2, 48, 3),
    ("ir", 3, 2, 96, 5),
    ("ir", 5, 1, 136, 5),
    ("ir", 5, 2, 232, 6),
    ("ir", 3, 1, 384, 2),
)
STEM_CHANNELS = 40
HEAD_CHANNELS = 1536
EXPANSION = 6
SE_RATIO = 0.25


class SqueezeExcite(nn.Module):
    """Channel gate: global average pool, 1x1 reduce, SiLU, 1x1 expand, sigmoid."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        gate = self.conv_expand(F.silu(self.conv_reduce(x_BCHW.mean((2, 3), keepdim=True))))
        return x_BCHW * torch.sigmoid(gate)


class DepthwiseSeparable(nn.Module):
    """Stage-0 block: depthwise conv, BN+SiLU, SE, pointwise conv, BN (residual when shapes match)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(in_ch, in_ch, kernel, stride, kernel // 2, groups=in_ch, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.se = SqueezeExcite(in_ch, round(in_ch * SE_RATIO))
        self.conv_pw = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.se(F.silu(self.bn1(self.conv_dw(x_BCHW))))))
        return x_BCHW + y if self.residual else y


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expand, BN+SiLU, depthwise conv, BN+SiLU, SE, 1x1 project, BN (residual when shapes match)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = in_ch * EXPANSION
        self.conv_pw = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.se = SqueezeExcite(mid, round(in_ch * SE_RATIO))
        self.conv_pwl = nn.Conv2d(mid, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.bn1(self.conv_pw(x_BCHW)))
        y = self.se(F.silu(self.bn2(self.conv_dw(y))))
        y = self.bn3(self.conv_pwl(y))
        return x_BCHW + y if self.residual else y


class EfficientNetB3(nn.Module):
    """EfficientNet-B3 feature extractor plus a replaceable ``classifier`` (timm parameter names)."""

    def __init__(self, classifier: nn.Module | None = None) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        stages = []
        in_ch = STEM_CHANNELS
        for kind, kernel, stride, out_ch, repeats in B3_STAGES:
            block_cls = DepthwiseSeparable if kind == "ds" else InvertedResidual
            blocks = []
            for index in range(repeats):
                blocks.append(block_cls(in_ch, out_ch, kernel, stride if index == 0 else 1))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = nn.Conv2d(in_ch, HEAD_CHANNELS, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(HEAD_CHANNELS)
        self.classifier = classifier if classifier is not None else nn.Linear(HEAD_CHANNELS, 1000)

    def forward_features(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """Pooled 1536-d features."""
        x = F.silu(self.bn1(self.conv_stem(x_BCHW)))
        x = self.blocks(x)
        x = F.silu(self.bn2(self.conv_head(x)))
        return x.mean((2, 3))

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x_BCHW))


class WatermarkNet(EfficientNetB3):
    """The LAION-5B watermark detector: EfficientNet-B3 with the 1536-625-256-2 MLP head. Returns logits (B, 2)."""

    def __init__(self) -> None:
        super().__init__(
            classifier=nn.Sequential(
                nn.Linear(HEAD_CHANNELS, 625),
                nn.ReLU(),
                nn.Dropout(0.3),
                nn.Linear(625, 256),
                nn.ReLU(),
                nn.Linear(256, 2),
            )
        )
