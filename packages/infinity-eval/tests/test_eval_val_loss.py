"""Validation loss: aggregation against hand computation, and the bitwise-ar adapter on a tiny pipeline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from infinity_eval.val_loss import ValLossAccumulator, per_token_stats, read_split, scale_token_weights


def test_per_scale_and_reweighted_aggregation_by_hand() -> None:
    schedule = [(1, 1), (2, 2)]  # 1 + 4 tokens, d = 2 bits
    labels = torch.tensor([[[1, 0], [1, 1], [0, 0], [1, 0], [0, 1]]])
    # bit logits [neg, pos]: confident-correct (+-3) except token 2 whose first bit is wrong
    logits = torch.zeros(1, 5, 2, 2)
    for t in range(5):
        for b in range(2):
            target = int(labels[0, t, b])
            logits[0, t, b, target] = 3.0
    logits[0, 2, 0] = torch.tensor([-3.0, 3.0])  # predicts 1, label 0
    flat = logits.view(1, 5, 4)
    loss, bit_acc, tok_acc = per_token_stats(flat, labels)
    good, bad = math.log1p(math.exp(-3.0)), math.log1p(math.exp(6.0))  # margins +3 (correct) and -6 (the flip)
    torch.testing.assert_close(loss[0], torch.tensor([good, good, (bad + good) / 2, good, good], dtype=torch.float64))
    assert bit_acc[0].tolist() == [1, 1, 0.5, 1, 1] and tok_acc[0].tolist() == [1, 1, 0, 1, 1]
    acc = ValLossAccumulator()
    acc.update(flat, labels, schedule)
    m = acc.metrics()
    assert m["val_loss/scale_00"] == pytest.approx(good)
    assert m["val_loss/scale_01"] == pytest.approx((3 * good + (bad + good) / 2) / 4)
    assert m["val_loss/bit_ce"] == pytest.approx(float(loss.mean()))
    w = scale_token_weights(schedule)  # scale 0 tokens weigh sqrt(4)/sqrt(1) = 2x a scale-1 token
    assert w.tolist() == pytest.approx([2 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6])
    assert m["val_loss/bit_ce_reweighted"] == pytest.approx(float((loss[0] * w).sum()))
    assert m["val_loss/acc_token"] == pytest.approx(0.8) and m["val_loss/acc_bit"] == pytest.approx(0.9)


def test_index_head_and_d1_token_equals_bit_accuracy() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (3, 5, 1), generator=gen)
    logits = torch.randn(3, 5, 2, generator=gen)  # d = 1: the 2d and 2^d heads coincide in width
    _, bit, tok = per_token_stats(logits, labels)
    assert torch.equal(bit, tok)
    labels2 = torch.randint(0, 2, (2, 5, 2), generator=gen)
    loss_idx, _, _ = per_token_stats(torch.randn(2, 5, 4, generator=gen), labels2)  # 2^d = 4 = 2d: bitwise path
    assert loss_idx.shape == (2, 5)
    with pytest.raises(ValueError, match="classes per token"):
        per_token_stats(torch.randn(1, 5, 3), labels2[:1])
    with pytest.raises(ValueError, match="schedule"):
        ValLossAccumulator().update(torch.randn(1, 5, 4), labels2[:1], [(1, 1), (1, 1)])


def test_bitwise_ar_adapter_on_tiny_pipeline(tmp_path: Path) -> None:
    pytest.importorskip("bitwise_ar.pipeline", reason="needs bitwise-ar")
    from bitwise_ar.testing import build_tiny_pipeline
    from infinity_eval.cli import main
    from infinity_eval.val_loss import bitwise_ar_validation_loss
    from infinity_shapes import write_split

    pipe = build_tiny_pipeline(tmp_path / "pipe")
    split = next(write_split(tmp_path / "data" / "shapes", length=3, seed=5).glob("*.jsonl"))
    assert len(read_split(split)) == 3
    a = bitwise_ar_validation_loss(pipe, split, image_size=(64, 64), batch_size=2, bsc_max_flip=0.2, seed=1, progress=False)
    b = bitwise_ar_validation_loss(pipe, split, image_size=(64, 64), batch_size=2, bsc_max_flip=0.2, seed=1, progress=False)
    assert a == b  # seeded BSC flips: reproducible
    assert a["val_loss/num_images"] == 3 and 0 < a["val_loss/bit_ce"] < 5 and "val_loss/scale_00" in a
    tf = bitwise_ar_validation_loss(pipe, split, image_size=(64, 64), batch_size=3, progress=False)
    assert tf["val_loss/bit_ce"] != a["val_loss/bit_ce"]
    assert main(["val-loss", str(pipe), str(split), "--image-size", "64", "64"]) == 0
    assert main(["val-loss", str(pipe), str(tmp_path / "missing.jsonl"), "--image-size", "64", "64"]) == 2
