"""The conv encoder and decoder (Flux/LDM style, no attention), with the official state-dict names.

Every conv is stored as ``<module>.conv.{weight,bias}`` and every GroupNorm as ``<module>.norm.{weight,bias}``, so
the official ``infinity_vae_*.pth`` weights load without renaming. Shapes: B batch, C channels, d latent channels.

Without autograd (``torch.no_grad`` / ``inference_mode``) the blocks apply SiLU and the residual sum in place, which
saves two full-size activation writes per block; with autograd they allocate (the in-place forms would overwrite
tensors the backward pass needs). The values are the same either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TokenizerConfig, norm_groups_for
from .winograd import winograd_conv3x3, winograd_filter

__all__ = ["Decoder", "Encoder", "subpixel_upsample_conv"]


WINOGRAD_MIN_CHANNELS = 64  # fewer input channels: the transforms cost more than the saved multiplies
WINOGRAD_MIN_WORK = 1 << 24  # C_in * C_out * H * W below this: per-band overheads outweigh the gain (measured)


class _Conv(nn.Module):
    """A 2-D conv registered under ``.conv`` (official naming).

    Without autograd on the CPU, a 3x3 stride-1 conv with at least :data:`WINOGRAD_MIN_CHANNELS` inputs on a large
    enough map runs as :func:`~bsq_tokenizer.winograd.winograd_conv3x3` (2.25x fewer multiply-adds, same result up
    to float rounding); its transformed filter is computed once and kept until the weight changes.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding)
        self._winograd_capable = kernel == 3 and stride == 1 and padding == 1 and in_ch >= WINOGRAD_MIN_CHANNELS
        self._winograd_cache: tuple[tuple, torch.Tensor] | None = None

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        if self._winograd_capable and self._use_winograd(x_BCHW):
            return winograd_conv3x3(x_BCHW, self._winograd_filter(), self.conv.bias)
        return self.conv(x_BCHW)

    def _use_winograd(self, x_BCHW: torch.Tensor) -> bool:
        _, C, H, W = x_BCHW.shape
        return (
            not torch.is_grad_enabled()
            and x_BCHW.device.type == "cpu"
            and x_BCHW.dtype in (torch.float32, torch.float64)
            and min(H, W) >= 8
            and C * self.conv.out_channels * H * W >= WINOGRAD_MIN_WORK
        )

    def _winograd_filter(self) -> torch.Tensor:
        weight = self.conv.weight
        # the same tensor, storage, contents (in-place writes such as load_state_dict bump _version) and dtype
        key = (id(weight), weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self._winograd_cache is None or self._winograd_cache[0] != key:
            with torch.no_grad():
                self._winograd_cache = (key, winograd_filter(weight.detach()))
        return self._winograd_cache[1]


class _Norm(nn.Module):
    """GroupNorm registered under ``.norm`` (official naming)."""

    def __init__(self, channels: int, config: TokenizerConfig) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(
            norm_groups_for(channels, config.norm_groups), channels, eps=config.norm_eps, affine=True
        )

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.norm(x_BCHW)


class ResnetBlock(nn.Module):
    """``x -> s(x) + conv2(swish(norm2(conv1(swish(norm1(x))))))``; ``s`` is a 1x1 conv when widths differ."""

    def __init__(self, in_ch: int, out_ch: int, config: TokenizerConfig) -> None:
        super().__init__()
        self.norm1 = _Norm(in_ch, config)
        self.conv1 = _Conv(in_ch, out_ch)
        self.norm2 = _Norm(out_ch, config)
        self.conv2 = _Conv(out_ch, out_ch)
        self.nin_shortcut = _Conv(in_ch, out_ch, kernel=1, padding=0) if in_ch != out_ch else None

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x_BCHW), inplace=inplace))
        h = self.conv2(F.silu(self.norm2(h), inplace=inplace))
        skip = x_BCHW if self.nin_shortcut is None else self.nin_shortcut(x_BCHW)
        return h.add_(skip) if inplace else skip + h


class Downsample(nn.Module):
    """Zero-pad one pixel right and bottom, then a 3x3 stride-2 conv without padding (halves H and W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _Conv(channels, channels, stride=2, padding=0)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x_BCHW, (0, 1, 0, 1)))


SUBPIXEL_MIN_AREA = 32 * 32  # below this input area the weight folding costs more than the saved convolution work


def _fold_phase(w_OIkk: torch.Tensor, dim: int, phase: int) -> torch.Tensor:
    """The 2-tap kernel along ``dim`` that output phase ``phase`` of a nearest-x2 upsample + 3-tap conv sees on the
    low-resolution input: taps (w0, w1 + w2) over rows (i - 1, i) for even outputs, (w0 + w1, w2) over (i, i + 1)
    for odd ones."""
    w0, w1, w2 = w_OIkk.unbind(dim)
    return torch.stack((w0, w1 + w2) if phase == 0 else (w0 + w1, w2), dim)


def subpixel_upsample_conv(x_BCHW: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(nearest_upsample_x2(x))`` for a 3x3, padding-1 conv, computed on the low-resolution input as four
    2x2 convolutions (one per output phase) whose outputs interleave: 16 instead of 36 multiply-adds per input pixel
    and no upsampled copy. Same result up to float rounding (the folded taps are sums of the 3x3 ones)."""
    B, _, H, W = x_BCHW.shape
    weight, bias = conv.weight, conv.bias
    fmt = torch.channels_last if x_BCHW.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    out = torch.empty(B, weight.shape[0], 2 * H, 2 * W, dtype=x_BCHW.dtype, device=x_BCHW.device, memory_format=fmt)
    padded = F.pad(x_BCHW, (1, 1, 1, 1))
    for a in (0, 1):
        rows = _fold_phase(weight, 2, a)
        for b in (0, 1):
            out[:, :, a::2, b::2] = F.conv2d(padded[:, :, a : a + H + 1, b : b + W + 1], _fold_phase(rows, 3, b), bias)
    return out


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv.

    Without autograd on the CPU (and inputs of at least :data:`SUBPIXEL_MIN_AREA` pixels) it runs as
    :func:`subpixel_upsample_conv`, 2.25x fewer multiply-adds; training and CUDA take the plain path.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _Conv(channels, channels)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        if (
            not torch.is_grad_enabled()
            and x_BCHW.device.type == "cpu"
            and x_BCHW.shape[-2] * x_BCHW.shape[-1] >= SUBPIXEL_MIN_AREA
        ):
            return subpixel_upsample_conv(x_BCHW, self.conv.conv)
        return self.conv(F.interpolate(x_BCHW, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, channels: int, config: TokenizerConfig) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, config)
        self.block_2 = ResnetBlock(channels, channels, config)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.block_1(x_BCHW))


class _Level(nn.Module):
    """One resolution level: ResnetBlocks under ``block`` and an optional ``downsample``/``upsample``."""

    def __init__(
        self, widths: list[tuple[int, int]], config: TokenizerConfig, resample: nn.Module | None, name: str
    ) -> None:
        super().__init__()
        self.block = nn.ModuleList([ResnetBlock(i, o, config) for i, o in widths])
        if resample is not None:
            self.add_module(name, resample)
        self._resample_name = name if resample is not None else None

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x_BCHW = block(x_BCHW)
        if self._resample_name is not None:
            x_BCHW = getattr(self, self._resample_name)(x_BCHW)
        return x_BCHW


class Encoder(nn.Module):
    """Image ``(B, 3, H, W)`` in [-1, 1] -> raw features ``(B, d, H / patch, W / patch)``."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        widths = config.encoder_level_channels
        self.conv_in = _Conv(config.image_channels, config.base_channels)
        levels = []
        current = config.base_channels
        for i, width in enumerate(widths):
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append((current, width))
                current = width
            down = Downsample(width) if i < config.num_downsamples else None
            levels.append(_Level(blocks, config, down, "downsample"))
        self.down = nn.ModuleList(levels)
        self.mid = _Mid(current, config)
        self.norm_out = _Norm(current, config)
        self.conv_out = _Conv(current, config.codebook_dim)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x_B3HW)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled()))


class Decoder(nn.Module):
    """Summed codes ``(B, d, h, w)`` -> image ``(B, 3, h * patch, w * patch)`` (not clamped)."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        widths = config.decoder_level_channels
        current = widths[-1]
        self.conv_in = _Conv(config.codebook_dim, current)
        self.mid = _Mid(current, config)
        levels: list[nn.Module] = [nn.Identity()] * len(widths)
        # levels run from the last (coarsest) to the first; the module index is the level index
        for i in reversed(range(len(widths))):
            blocks = []
            for _ in range(config.num_res_blocks + 1):
                blocks.append((current, widths[i]))
                current = widths[i]
            up = Upsample(widths[i]) if 1 <= i <= config.num_downsamples else None
            levels[i] = _Level(blocks, config, up, "upsample")
        self.up = nn.ModuleList(levels)
        self.norm_out = _Norm(current, config)
        self.conv_out = _Conv(current, config.image_channels)

    def forward(self, z_BdHW: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z_BdHW))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled()))
