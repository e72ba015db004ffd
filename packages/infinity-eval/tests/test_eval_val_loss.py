"""Validation loss: the bitwise-ar adapter on a tiny pipeline (jsonl split, seeded BSC), and its equality with the
trainer's own ``[val]`` loss on the exported checkpoint of the same step. The computation itself (one implementation,
:mod:`bitwise_ar.train.validation`) is tested by hand in bitwise-ar's ``test_train_validation.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("bitwise_ar.pipeline", reason="needs bitwise-ar")


def test_bitwise_ar_adapter_on_tiny_pipeline(tmp_path: Path) -> None:
    from bitwise_ar.testing import build_tiny_pipeline
    from infinity_eval.cli import main
    from infinity_eval.val_loss import bitwise_ar_validation_loss, read_split
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
    assert main(["val-loss", str(pipe), "synthetic"]) == 2  # a data source needs --batches
    assert main(["val-loss", str(pipe), "nope", "--batches", "1"]) == 2  # neither a path nor a source


def test_trainer_val_loss_at_step_k_equals_infinity_eval_on_the_step_k_checkpoint(tmp_path: Path, capsys) -> None:
    from bitwise_ar.cli import main as bitwise_ar_cli
    from bitwise_ar.testing import TINY_VOCABULARY
    from bitwise_ar.text_encoder import build_tiny_t5
    from bitwise_ar.train.config import load_config
    from bitwise_ar.train.trainer import ARTrainer
    from infinity_eval.cli import main
    from infinity_eval.val_loss import bitwise_ar_validation_loss
    from infinity_run.checkpoint import CheckpointStore
    from infinity_run.tracking import Tracker

    class Recorder(Tracker):
        def __init__(self) -> None:
            self.rows: list[tuple[int, dict]] = []

        def log_metrics(self, metrics, step):
            self.rows.append((step, dict(metrics)))

    t5 = build_tiny_t5(tmp_path / "t5", TINY_VOCABULARY, d_model=32, num_layers=1, num_heads=2, d_ff=32)
    config = load_config(None, [
        f"run.out_dir={tmp_path / 'run'}", "data.source=synthetic", "data.batch_size=2", "data.image_size=32",
        f"model.text_encoder={t5}", "model.overrides.text_channels=32", "train.steps=2", "optim.lr=3e-3",
        "run.checkpoint_every=2", "val.source=synthetic", "val.seed=5", "val.image_size=32", "val.batch_size=3",
        "val.batches=2", "val.every=2",
    ])  # fmt: skip
    tracker = Recorder()
    ARTrainer(config, tracker=tracker).fit()
    logged = next(m for step, m in tracker.rows if step == 2 and "val_loss/bit_ce" in m)
    exported = tmp_path / "step2"
    assert bitwise_ar_cli(["export", str(CheckpointStore(tmp_path / "run" / "checkpoints").latest()), "-o", str(exported)]) == 0
    evaluated = bitwise_ar_validation_loss(exported, "synthetic", data_seed=5, image_size=(32, 32), batch_size=3,
                                           batches=2, progress=False)  # fmt: skip
    assert evaluated.keys() == logged.keys()
    for key, value in logged.items():
        assert evaluated[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    capsys.readouterr()
    assert main(["val-loss", str(exported), "synthetic", "--data-seed", "5", "--image-size", "32", "32",
                 "--batch-size", "3", "--batches", "2"]) == 0  # fmt: skip
    printed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert float(printed["val_loss/bit_ce"]) == pytest.approx(logged["val_loss/bit_ce"], rel=1e-5)
    other = bitwise_ar_validation_loss(exported, "synthetic", data_seed=6, image_size=(32, 32), batch_size=3, batches=2,
                                       progress=False)  # fmt: skip
    assert other["val_loss/bit_ce"] != logged["val_loss/bit_ce"]  # the data seed matters: the equality is not trivial
