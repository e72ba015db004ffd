"""Multi-scale residual bit quantisation (paper Alg. 1) and the transformer inputs built from bits (Alg. 2).

Pure functions on tensors; everything runs in float32 whatever the input dtype (as the official quantiser does
with autocast off). Shape letters: B batch, d bits per token (``codebook_dim``), (H, W) the full latent size,
(h, w) the grid of one scale, L the number of tokens over all scales.

Interpolation modes match the official code exactly:

* residual downsampling uses ``area`` = adaptive average pooling (bins may overlap, e.g. 16 -> 6);
* code upsampling and the transformer-input downsampling use bilinear with ``align_corners=False`` and no
  antialiasing (the official ``trilinear`` on a depth-1 5-D tensor is the same operation).

Bit j of a token is channel j of the latent; a bit is 1 where the (residual) value is strictly positive. The code
of a bit is ``(2 b - 1) * scale`` with ``scale = 1 / sqrt(d)`` for BSQ (unit-norm codes) and 1 for LFQ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "bits_to_codes",
    "codes_to_bits",
    "flip_and_requantize",
    "flipped_summed_codes",
    "multiscale_quantize",
    "patchify_bits",
    "resize_area",
    "resize_bilinear",
    "summed_codes_from_bits",
    "transformer_inputs",
    "unpatchify_bits",
]

Schedule = Sequence[tuple[int, int]]


def _size(size: Sequence[int]) -> tuple[int, int]:
    h, w = (int(s) for s in size)
    return h, w


def resize_bilinear(x_BdHW: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of ``(B, d, H, W)`` to ``(B, d, *size)``; ``align_corners=False``, no antialias (up or down)."""
    size = _size(size)
    if tuple(x_BdHW.shape[-2:]) == size:
        return x_BdHW
    return F.interpolate(x_BdHW, size=size, mode="bilinear", align_corners=False)


def resize_area(x_BdHW: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Area resize of ``(B, d, H, W)`` to ``(B, d, *size)`` with adaptive-average-pooling semantics.

    Output cell i along an axis averages input cells ``floor(i*n_in/n_out) .. ceil((i+1)*n_in/n_out) - 1``.
    """
    size = _size(size)
    if tuple(x_BdHW.shape[-2:]) == size:
        return x_BdHW
    return F.adaptive_avg_pool2d(x_BdHW, size)


def _default_scale(d: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(d) if scale is None else float(scale)


def bits_to_codes(bits_BhwD: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    """Bits ``(B, h, w, d)`` (uint8/bool/int) -> float32 codes ``(B, d, h, w)`` = ``(2 b - 1) * scale``.

    ``scale`` defaults to ``1 / sqrt(d)`` (BSQ: every code has unit L2 norm); pass 1.0 for LFQ codes.
    """
    if bits_BhwD.ndim != 4:
        raise ValueError(f"bits must have shape (B, h, w, d), got {tuple(bits_BhwD.shape)}")
    d = bits_BhwD.shape[-1]
    signs = bits_BhwD.to(torch.float32) * 2.0 - 1.0
    return (signs * _default_scale(d, scale)).permute(0, 3, 1, 2).contiguous()


def codes_to_bits(codes_BdHW: torch.Tensor) -> torch.Tensor:
    """Codes (or any features) ``(B, d, h, w)`` -> bits ``(B, h, w, d)`` as uint8: 1 where the value is > 0."""
    if codes_BdHW.ndim != 4:
        raise ValueError(f"codes must have shape (B, d, h, w), got {tuple(codes_BdHW.shape)}")
    return (codes_BdHW > 0).permute(0, 2, 3, 1).to(torch.uint8).contiguous()


def patchify_bits(bits_BhwD: torch.Tensor) -> torch.Tensor:
    """Group 2x2 latent tokens into one transformer token: ``(B, 2h, 2w, d)`` -> ``(B, h, w, 4d)``.

    Channel order is PyTorch ``pixel_unshuffle``: transformer channel ``4 c + 2 i + j`` holds bit c of the latent
    token at offset (i, j) inside the 2x2 block (what the official 8B model uses).
    """
    if bits_BhwD.ndim != 4 or bits_BhwD.shape[1] % 2 or bits_BhwD.shape[2] % 2:
        raise ValueError(f"patchify needs (B, 2h, 2w, d) with even sides, got {tuple(bits_BhwD.shape)}")
    return F.pixel_unshuffle(bits_BhwD.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).contiguous()


def unpatchify_bits(bits_BhwD: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`patchify_bits`: ``(B, h, w, 4d)`` -> ``(B, 2h, 2w, d)``."""
    if bits_BhwD.ndim != 4 or bits_BhwD.shape[-1] % 4:
        raise ValueError(f"unpatchify needs (B, h, w, 4d), got {tuple(bits_BhwD.shape)}")
    return F.pixel_shuffle(bits_BhwD.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).contiguous()


def _check_schedule(schedule: Schedule, full: tuple[int, int]) -> list[tuple[int, int]]:
    sched = [_size(s) for s in schedule]
    if not sched:
        raise ValueError("the scale schedule is empty")
    if sched[-1] != full:
        raise ValueError(
            f"the last scale of the schedule {sched[-1]} must equal the latent size {full}; "
            "build one with bsq_tokenizer.schedules.schedule_for_latent(h, w)"
        )
    for h, w in sched:
        if not (1 <= h <= full[0] and 1 <= w <= full[1]):
            raise ValueError(f"scale {(h, w)} does not fit in the latent size {full}")
    return sched


def multiscale_quantize(
    features_BdHW: torch.Tensor, schedule: Schedule, *, scale: float | None = None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Multi-scale residual bit quantisation of encoder features (paper Alg. 1, official interpolation modes).

    For k = 1..K: ``r = area(residual, (h_k, w_k))``; ``b_k = r > 0``; ``u_k = bilinear(codes(b_k), (H, W))``;
    ``residual -= u_k``; ``summed += u_k``.

    Returns ``(bits, summed_codes)``: per-scale bits ``(B, h_k, w_k, d)`` uint8 and the float32 sum of the upsampled
    codes ``(B, d, H, W)``, which is what the decoder consumes.
    """
    if features_BdHW.ndim != 4:
        raise ValueError(f"features must have shape (B, d, H, W), got {tuple(features_BdHW.shape)}")
    full = (features_BdHW.shape[-2], features_BdHW.shape[-1])
    sched = _check_schedule(schedule, full)
    d = features_BdHW.shape[1]
    residual = features_BdHW.detach().to(torch.float32)
    summed = torch.zeros_like(residual)
    bits: list[torch.Tensor] = []
    for hw in sched:
        r = resize_area(residual, hw)
        b = codes_to_bits(r)
        up = resize_bilinear(bits_to_codes(b, scale=_default_scale(d, scale)), full)
        residual = residual - up
        summed = summed + up
        bits.append(b)
    return bits, summed


def summed_codes_from_bits(
    bits_list: Sequence[torch.Tensor],
    schedule: Schedule,
    *,
    upto_scale: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Sum of the upsampled codes of scales ``1..upto_scale`` (default all): ``(B, d, H, W)`` float32.

    With all scales this equals the ``summed_codes`` of :func:`multiscale_quantize`; fewer scales give the
    coarse-to-fine previews of progressive decoding.
    """
    sched = [_size(s) for s in schedule]
    _check_bits(bits_list, sched)
    k_max = len(sched) if upto_scale is None else int(upto_scale)
    if not 1 <= k_max <= len(sched):
        raise ValueError(f"upto_scale must be in 1..{len(sched)}, got {upto_scale}")
    full = sched[-1]
    d = bits_list[0].shape[-1]
    summed = None
    for b in bits_list[:k_max]:
        up = resize_bilinear(bits_to_codes(b, scale=_default_scale(d, scale)), full)
        summed = up if summed is None else summed + up
    assert summed is not None
    return summed


def _check_bits(bits_list: Sequence[torch.Tensor], sched: list[tuple[int, int]]) -> None:
    if len(bits_list) != len(sched):
        raise ValueError(f"got {len(bits_list)} bit maps for a schedule of {len(sched)} scales")
    for k, (b, hw) in enumerate(zip(bits_list, sched)):
        if b.ndim != 4 or tuple(b.shape[1:3]) != hw:
            raise ValueError(f"bits of scale {k + 1} have shape {tuple(b.shape)}, expected (B, {hw[0]}, {hw[1]}, d)")


def _flatten_tokens(x_BdHW: torch.Tensor, patchify: bool = False) -> torch.Tensor:
    # (B, d, h, w) -> (B, h*w, d), row-major tokens, channel = bit index; with patchify 2x2 blocks -> (B, h*w/4, 4d)
    if patchify:
        x_BdHW = F.pixel_unshuffle(x_BdHW, 2)
    return x_BdHW.flatten(2).transpose(1, 2)


def transformer_inputs(
    bits_list: Sequence[torch.Tensor], schedule: Schedule, *, scale: float | None = None, patchify: bool = False
) -> torch.Tensor:
    """The AR model's inputs for scales 2..K built from bits (teacher forcing): ``(B, L - h_1 w_1, d)`` float32.

    ``cum_k = sum_{j<=k} bilinear(codes_j, (H, W))``; ``F~_k = bilinear(cum_k, (h_{k+1}, w_{k+1}))`` flattened
    row-major, for k = 1..K-1, concatenated. Note the *bilinear* downsampling here (official training and inference
    path), unlike the *area* downsampling of the residual inside the quantiser. With ``patchify`` (8B model) the
    schedule is the latent one (twice the transformer grid) and each F~_k is 2x2-unshuffled to 4d channels.
    """
    sched = [_size(s) for s in schedule]
    _check_bits(bits_list, sched)
    full = sched[-1]
    batch, d = bits_list[0].shape[0], bits_list[0].shape[-1]
    pieces: list[torch.Tensor] = []
    cum = None
    for k in range(len(sched) - 1):
        up = resize_bilinear(bits_to_codes(bits_list[k], scale=_default_scale(d, scale)), full)
        cum = up if cum is None else cum + up
        pieces.append(_flatten_tokens(resize_bilinear(cum, sched[k + 1]), patchify))
    if not pieces:
        return torch.zeros(batch, 0, 4 * d if patchify else d, dtype=torch.float32, device=bits_list[0].device)
    return torch.cat(pieces, dim=1)


def sample_flip_probs(
    num_scales: int, max_prob: float, generator: torch.Generator, *, num_noised: int | None = None
) -> list[float]:
    """Bitwise Self-Correction flip rates: per scale uniform over {0, 0.01, ..., max_prob} (official granularity),
    for the first ``num_noised`` scales (default all), 0 after; one draw per scale shared by the batch. Always draws
    ``num_scales`` integers from ``generator``, so the stream does not depend on ``max_prob``."""
    if not 0.0 <= max_prob <= 1.0:
        raise ValueError(f"the BSC max flip probability must be in [0, 1], got {max_prob}")
    noised = num_scales if num_noised is None else num_noised
    draws = torch.randint(0, round(100 * max_prob) + 1, (num_scales,), generator=generator).tolist()
    return [d / 100 if k < noised else 0.0 for k, d in enumerate(draws)]


def flip_and_requantize(
    features_BdHW: torch.Tensor,
    schedule: Schedule,
    flip_prob_per_scale: Sequence[float],
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    *,
    scale: float | None = None,
    patchify: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Bitwise Self-Correction (paper Alg. 2): quantise, randomly flip bits, and re-quantise the rest against them.

    For k = 1..K: ``residual = F - cum`` (area-downsampled to (h_k, w_k) unless last); ``b_k = residual > 0`` is the
    label of scale k; each bit is then flipped independently with probability ``flip_prob_per_scale[k-1]`` (one
    uniform draw per bit from ``generator``, or from ``generator[i]`` for sample i when a sequence is given), the flipped bits' codes are upsampled and added to ``cum``, and
    ``F~_k = bilinear(cum, (h_{k+1}, w_{k+1}))`` is the input for the next scale. Later labels therefore correct
    earlier flips. With all probabilities 0 this is exactly teacher forcing (:func:`multiscale_quantize` +
    :func:`transformer_inputs`); no random numbers are drawn for scales with probability 0.

    Returns ``(inputs_BLd, labels)``: inputs ``(B, L - h_1 w_1, d)`` float32 and label bits ``(B, h_k, w_k, d)``.
    With ``patchify`` (8B model; ``schedule`` is the latent schedule, twice the transformer grid) inputs are
    ``(B, L', 4d)`` and labels ``(B, h_k / 2, w_k / 2, 4d)`` (:func:`patchify_bits`).
    """
    if features_BdHW.ndim != 4:
        raise ValueError(f"features must have shape (B, d, H, W), got {tuple(features_BdHW.shape)}")
    full = (features_BdHW.shape[-2], features_BdHW.shape[-1])
    sched = _check_schedule(schedule, full)
    probs = [float(p) for p in flip_prob_per_scale]
    if len(probs) != len(sched):
        raise ValueError(f"flip_prob_per_scale has {len(probs)} entries for a schedule of {len(sched)} scales")
    if any(not 0.0 <= p <= 1.0 for p in probs):
        raise ValueError(f"flip probabilities must lie in [0, 1], got {probs}")
    batch, d = features_BdHW.shape[0], features_BdHW.shape[1]
    labels: list[torch.Tensor] = []
    pieces: list[torch.Tensor] = []
    for k, bits, cum in _bsc_chain(features_BdHW, sched, probs, generator, _default_scale(d, scale)):
        labels.append(patchify_bits(bits) if patchify else bits)
        if k + 1 < len(sched):
            pieces.append(_flatten_tokens(resize_bilinear(cum, sched[k + 1]), patchify))
    empty = features_BdHW.new_zeros(batch, 0, 4 * d if patchify else d, dtype=torch.float32)
    inputs = torch.cat(pieces, dim=1) if pieces else empty
    return inputs, labels


def _uniform(shape: torch.Size, generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """Uniform draws of ``shape``: from one generator, or (a sequence) sample i's slice from generator i, so a
    sample's draws do not depend on which batch it is in (data-parallel training gives the same flips on any number
    of workers)."""
    if generator is None or isinstance(generator, torch.Generator):
        device = generator.device if generator is not None else "cpu"
        return torch.rand(shape, generator=generator, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
    return torch.stack([torch.rand(shape[1:], generator=g, device=g.device) for g in generator])


def _bsc_chain(features_BdHW, sched, probs, generator, code_scale):
    """Yield ``(k, label_bits_k, cum_k)``: the BSC residual chain where scale k's bits are flipped with ``probs[k]``
    (one uniform draw per bit, none when 0) and ``cum_k`` sums the upsampled codes of the *flipped* bits so far."""
    feats = features_BdHW.detach().to(torch.float32)
    full = (feats.shape[-2], feats.shape[-1])
    cum = torch.zeros_like(feats)
    for k, hw in enumerate(sched):
        bits = codes_to_bits(resize_area(feats - cum, hw))
        label = bits
        if probs[k] > 0:
            draw = _uniform(bits.shape, generator).to(bits.device)
            bits = torch.where(draw < probs[k], 1 - bits, bits)
        cum = cum + resize_bilinear(bits_to_codes(bits, scale=code_scale), full)
        yield k, label, cum


def flipped_summed_codes(
    features_BdHW: torch.Tensor,
    schedule: Schedule,
    flip_prob_per_scale: Sequence[float],
    generator: torch.Generator | None = None,
    *,
    scale: float | None = None,
) -> torch.Tensor:
    """The summed codes ``(B, d, H, W)`` a decoder sees when every scale's bits are flipped with its probability and
    later scales re-quantise against the flips (the arithmetic of :func:`flip_and_requantize`, flips of the last
    scale included). All probabilities 0 gives the clean :func:`multiscale_quantize` sum. Used to train decoders
    that tolerate the bit errors of a sampler."""
    if features_BdHW.ndim != 4:
        raise ValueError(f"features must have shape (B, d, H, W), got {tuple(features_BdHW.shape)}")
    sched = _check_schedule(schedule, (features_BdHW.shape[-2], features_BdHW.shape[-1]))
    probs = [float(p) for p in flip_prob_per_scale]
    if len(probs) != len(sched) or any(not 0.0 <= p <= 1.0 for p in probs):
        raise ValueError(f"need one flip probability in [0, 1] per scale ({len(sched)}), got {probs}")
    *_, (_k, _label, cum) = _bsc_chain(
        features_BdHW, sched, probs, generator, _default_scale(features_BdHW.shape[1], scale)
    )
    return cum
