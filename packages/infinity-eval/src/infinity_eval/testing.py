"""Builders of small random models in the real on-disk formats, for tests, demos and smoke runs.

Nothing here downloads anything; every builder takes an explicit seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch


def write_random_fid_inception(path: str | Path, *, seed: int = 0) -> Path:
    """Save a seeded random FID Inception state dict (same keys and shapes as the released ``.pth``)."""
    from infinity_eval.fid.inception import FIDInceptionV3

    gen = torch.Generator().manual_seed(seed)
    model = FIDInceptionV3()
    state = model.state_dict()
    for name, tensor in state.items():
        if name.endswith("conv.weight"):
            fan_in = tensor[0].numel()
            # He-normal keeps ReLU activations O(1) through the 94 layers, so pool3 features are informative.
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * math.sqrt(2.0 / fan_in))
        elif name.endswith("bn.weight"):
            tensor.copy_(1.0 + 0.1 * torch.randn(tensor.shape, generator=gen))
        elif name.endswith("bn.bias"):
            tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
        elif name.endswith("running_var"):
            tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
        elif name.endswith("running_mean"):
            tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
        elif name.startswith("fc."):
            tensor.copy_(0.01 * torch.randn(tensor.shape, generator=gen))
    path = Path(path)
    torch.save(state, path)
    return path
