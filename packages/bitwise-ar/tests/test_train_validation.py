"""Validation loss (``[val]``): aggregation against hand computation, config checks, and the trainer's deterministic,
teacher-forced evaluation logged at its steps. Its equality with ``infinity-eval val-loss`` on an exported checkpoint is
tested in infinity-eval (``test_eval_val_loss.py``); under Ray DDP/FSDP in ``test_train_scale.py``."""

from __future__ import annotations

import math

import pytest
import torch
from bitwise_ar.train.config import load_config
from bitwise_ar.train.loss import per_token_stats, token_weights
from bitwise_ar.train.trainer import ARTrainer
from bitwise_ar.train.validation import ValLossAccumulator
from infinity_run.tracking import Tracker


class RecordingTracker(Tracker):
    def __init__(self) -> None:
        self.metrics: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))


def _overrides(tmp_path, *extra: str) -> list[str]:
    return [
        f"run.out_dir={tmp_path}", "data.source=synthetic", "data.batch_size=2", "data.image_size=32", "train.steps=3",
        "run.checkpoint_every=0", "val.source=synthetic", "val.image_size=32", "val.batch_size=2", "val.batches=2",
        "val.every=2", *extra,
    ]  # fmt: skip


def test_per_scale_and_reweighted_aggregation_by_hand() -> None:
    schedule = [(1, 1), (2, 2)]  # 1 + 4 tokens, d = 2 bits
    labels = torch.tensor([[[1, 0], [1, 1], [0, 0], [1, 0], [0, 1]]])
    # bit logits [neg, pos]: confident-correct (+-3) except token 2 whose first bit is wrong
    logits = torch.zeros(1, 5, 2, 2)
    for t in range(5):
        for b in range(2):
            logits[0, t, b, int(labels[0, t, b])] = 3.0
    logits[0, 2, 0] = torch.tensor([-3.0, 3.0])  # predicts 1, label 0
    flat = logits.view(1, 5, 4)
    loss, correct = per_token_stats(flat, labels, dtype=torch.float64)
    good, bad = math.log1p(math.exp(-3.0)), math.log1p(math.exp(6.0))  # margins +3 (correct) and -6 (the flip)
    torch.testing.assert_close(loss[0], torch.tensor([good, good, (bad + good) / 2, good, good], dtype=torch.float64))
    assert correct[0].double().mean(-1).tolist() == [1, 1, 0.5, 1, 1]
    acc = ValLossAccumulator()
    acc.update(flat, labels, schedule)
    m = acc.metrics()
    assert m["val_loss/scale_00"] == pytest.approx(good)
    assert m["val_loss/scale_01"] == pytest.approx((3 * good + (bad + good) / 2) / 4)
    assert m["val_loss/bit_ce"] == pytest.approx(float(loss.mean()))
    w = token_weights(schedule, dtype=torch.float64)  # scale 0 tokens weigh sqrt(4)/sqrt(1) = 2x a scale-1 token
    assert w.tolist() == pytest.approx([2 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6])
    assert m["val_loss/bit_ce_reweighted"] == pytest.approx(float((loss[0] * w).sum()))
    assert m["val_loss/acc_token"] == pytest.approx(0.8) and m["val_loss/acc_bit"] == pytest.approx(0.9)


def test_sums_merge_across_batches_and_bad_shapes_are_refused() -> None:
    gen = torch.Generator().manual_seed(0)
    schedule = [(1, 1), (2, 2)]
    labels = torch.randint(0, 2, (4, 5, 3), generator=gen)
    logits = torch.randn(4, 5, 6, generator=gen)
    whole, halves = ValLossAccumulator(), ValLossAccumulator()
    whole.update(logits, labels, schedule)
    halves.update(logits[:1], labels[:1], schedule)
    halves.update(logits[1:], labels[1:], schedule)
    assert whole.metrics() == pytest.approx(halves.metrics(), rel=1e-12)
    index = torch.randn(4, 5, 8, generator=gen)  # 2^d = 8 classes: the index head
    assert per_token_stats(index, labels)[0].shape == (4, 5)
    with pytest.raises(ValueError, match="classes per token"):
        per_token_stats(torch.randn(4, 5, 7), labels)
    with pytest.raises(ValueError, match="schedule"):
        ValLossAccumulator().update(logits, labels, [(1, 1), (1, 1)])
    with pytest.raises(ValueError, match="no validation batches"):
        ValLossAccumulator().metrics()


def test_val_config_is_checked(tmp_path) -> None:
    assert not load_config(None, []).val.enabled  # off by default
    with pytest.raises(ValueError, match=r"val.every must be >= 1"):
        load_config(None, _overrides(tmp_path, "val.every=0"))
    with pytest.raises(ValueError, match=r"val.batches must be >= 1"):
        load_config(None, _overrides(tmp_path, "val.batches=0"))
    with pytest.raises(ValueError, match=r"is the training data itself"):
        load_config(None, _overrides(tmp_path, "val.seed=0"))  # data.seed is 0 too
    with pytest.raises(ValueError, match=r"val.source 'nope' is neither an existing path nor a known source: .*synthetic"):
        ARTrainer(load_config(None, _overrides(tmp_path, "val.source=nope")))
    with pytest.raises(ValueError, match=r"options \['x'\] do not apply to the synthetic source"):
        ARTrainer(load_config(None, _overrides(tmp_path, "val.options.x=1")))


def test_trainer_logs_a_deterministic_teacher_forced_val_loss(tmp_path) -> None:
    tracker = RecordingTracker()
    # drop path (random in train mode), text dropout and BSC on: validation must use none of them
    trainer = ARTrainer(load_config(None, _overrides(tmp_path / "a", "model.overrides.drop_path_rate=0.5",
                                                     "train.cond_drop_rate=1.0", "train.bsc_max_flip=1.0")),
                        tracker=tracker)  # fmt: skip
    plain = ARTrainer(load_config(None, _overrides(tmp_path / "b", "model.overrides.drop_path_rate=0.5")))
    encoded = []
    hook = trainer.tokenizer.encode_features
    trainer.tokenizer.encode_features = lambda images: encoded.append(len(images)) or hook(images)
    before = trainer.validate()
    assert trainer.model.training  # the training mode is restored
    torch.rand(7)  # global RNG state moves: the number must not
    assert trainer.validate() == before == plain.validate()  # same weights, same held-out batches
    assert sum(encoded) == 4  # the held-out images went through the frozen tokenizer once, not at every validation
    assert before["val_loss/num_images"] == 4 and {"val_loss/scale_00", "val_loss/acc_bit_scale_00"} <= set(before)
    trainer.fit()
    logged = {step: m for step, m in tracker.metrics if "val_loss/bit_ce" in m}
    assert sorted(logged) == [2, 3]  # every 2 steps and the last step
    assert logged[3] == trainer.validate()  # deterministic at a fixed step
    assert logged[3]["val_loss/bit_ce"] != before["val_loss/bit_ce"]  # it measures the trained weights
