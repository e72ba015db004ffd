"""LPIPS-style perceptual loss on a user-supplied VGG16 backbone, and a PatchGAN discriminator with hinge losses.

No weights are downloaded: the backbone is a file the user provides (torchvision's ``vgg16-397923af.pth`` layout,
keys ``features.{i}.weight``), optionally with LPIPS linear heads (the ``lpips`` package's ``vgg.pth``, keys
``lin{k}.model.1.weight``). Without heads every layer's channels are weighted equally. Tests use random backbones.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# VGG16 "D" configuration; LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAPS = (3, 8, 15, 22, 29)  # indices (in `features`) of the ReLUs LPIPS reads
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _vgg_features(width: float = 1.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            out = max(1, int(item * width))
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(inplace=False)]
            channels = out
    return nn.Sequential(*layers)


class PerceptualLoss(nn.Module):
    """LPIPS distance ``sum_l mean_hw || w_l * (phi_l(x) / |phi_l(x)| - phi_l(y) / |phi_l(y)|) ||^2``.

    Args:
        backbone_path: VGG16 weights (torchvision layout). ``None`` builds a random backbone (tests only; pass
            ``generator`` for reproducibility) — a random backbone is *not* a meaningful perceptual metric.
        heads_path: LPIPS linear heads; ``None`` weights all channels equally.
        width: channel multiplier of the random backbone (ignored with a file); tests use small widths.
    """

    def __init__(
        self,
        backbone_path: str | Path | None = None,
        heads_path: str | Path | None = None,
        *,
        width: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if backbone_path is not None:
            width = 1.0
        self.features = _vgg_features(width)
        if backbone_path is not None:
            path = Path(backbone_path)
            if not path.is_file():
                raise FileNotFoundError(f"perceptual backbone {path} not found (a torchvision vgg16 state dict)")
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
            missing = self.features.load_state_dict(state, strict=False).missing_keys
            if missing:
                raise ValueError(
                    f"{path} lacks VGG16 feature weights {missing[:4]}...; expected torchvision vgg16 keys"
                )
        elif generator is not None:
            with torch.no_grad():
                for m in self.features.modules():
                    if isinstance(m, nn.Conv2d):
                        nn.init.kaiming_normal_(m.weight, generator=generator)
                        m.bias.zero_()
        self.features.requires_grad_(False).eval()
        channels = [self.features[i - 1].out_channels for i in _TAPS]
        self.heads = nn.ParameterList([nn.Parameter(torch.full((c,), 1.0 / c), requires_grad=False) for c in channels])
        if heads_path is not None:
            path = Path(heads_path)
            if not path.is_file():
                raise FileNotFoundError(f"LPIPS heads file {path} not found (the lpips package's weights/v0.1/vgg.pth)")
            state = torch.load(path, map_location="cpu", weights_only=True)
            for k, head in enumerate(self.heads):
                head.data.copy_(state[f"lin{k}.model.1.weight"].flatten())
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:  # the backbone always stays in eval mode
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
        """Mean LPIPS distance between images in [-1, 1]."""
        h = torch.cat(((x_B3HW - self.shift) / self.scale, (y_B3HW - self.shift) / self.scale))
        total = h.new_zeros(())
        tap = 0
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i == _TAPS[tap]:
                a, b = F.normalize(h, dim=1, eps=1e-10).chunk(2)
                total = total + ((a - b) ** 2 * self.heads[tap].view(1, -1, 1, 1)).sum(1).mean()
                tap += 1
                if tap == len(_TAPS):
                    break
        return total


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix NLayer): conv 4x4 stride 2 stacks, BatchNorm, LeakyReLU(0.2); one logit per patch."""

    def __init__(self, *, channels: int = 64, num_layers: int = 3, image_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(image_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for n in range(1, num_layers + 1):
            out = channels * min(2**n, 8)
            stride = 2 if n < num_layers else 1
            layers += [nn.Conv2d(width, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        return self.net(x_B3HW)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ``mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat)))``."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss ``-mean(D(x_hat))``."""
    return -fake_logits.mean()
