"""Training checkpoints flow into the inference pipeline; the official toy data trains with zero dropped items."""

from __future__ import annotations

import io

import pytest
import torch
from bitwise_ar.train.config import load_config
from bitwise_ar.train.trainer import ARTrainer
from infinity_run.checkpoint import CheckpointStore


def test_checkpoint_round_trip_into_the_pipeline(tmp_path):
    from bitwise_ar.model import InfinityTransformer
    from bitwise_ar.pipeline import InfinityPipeline
    from bitwise_ar.testing import TINY_VOCABULARY
    from bitwise_ar.text_encoder import build_tiny_t5

    t5 = build_tiny_t5(tmp_path / "t5", TINY_VOCABULARY, d_model=32, num_layers=1, num_heads=2, d_ff=32)
    config = load_config(
        None,
        [
            f"run.out_dir={tmp_path / 'run'}", "data.source=synthetic", f"model.text_encoder={t5}",
            "model.overrides.text_channels=32",
            "data.batch_size=2", "data.image_size=32", "train.steps=2", "run.checkpoint_every=1",
        ],
    )
    trainer = ARTrainer(config)
    trainer.fit()
    from bitwise_ar.cli import main as cli

    exported = tmp_path / "final"
    assert cli(["export", str(CheckpointStore(tmp_path / "run" / "checkpoints").latest()), "-o", str(exported)]) == 0
    assert cli(["export", str(tmp_path / "run" / "nowhere"), "-o", str(tmp_path / "x")]) == 1  # one-line error
    reloaded = InfinityTransformer.from_pretrained(exported / "transformer")
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
    # the export is a complete pipeline directory (the run's T5 copied in): it generates
    exported_pipe = InfinityPipeline.from_pretrained(exported)
    assert exported_pipe.defaults.image_size == (32, 32)
    assert exported_pipe(["a red circle"], seed=0, image_size=(32, 32)).images[0].size == (32, 32)


def test_official_toy_data_trains_with_zero_dropped_items(tmp_path, toy_data_dir):
    root = toy_data_dir
    config = load_config(
        None, [f"run.out_dir={tmp_path}", f"data.source={root / 'splits'}", "data.batch_size=1", "train.steps=1", "run.checkpoint_every=0"]
    )
    trainer = ARTrainer(config)
    metrics = trainer.fit()
    assert trainer.step == 1 and metrics["train/tokens"] == 533  # 1.5 template at 0.06M: 336x224, 533 tokens
    loader = trainer.source.loader
    assert len(loader.table) == 2500 and not loader.table.skipped
    assert dict(loader.stats) == {"loaded": 1}


def test_a_pipeline_logs_as_a_registered_mlflow_model_and_loads_back(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    import pandas as pd
    from bitwise_ar.mlflow_model import log_pipeline
    from bitwise_ar.testing import build_tiny_pipeline
    from PIL import Image

    pipe = build_tiny_pipeline(tmp_path / "pipe")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("pyfunc"))
    log_pipeline(pipe, run_id=run.info.run_id, tracking_uri=uri, registered_model_name="tiny-infinity")
    model = mlflow.pyfunc.load_model("models:/tiny-infinity/1")
    out = model.predict(pd.DataFrame({"prompt": ["a red circle", "two blue squares"]}), params={"seed": 3})
    assert out["seed"].tolist() == [3, 4]
    images = [Image.open(io.BytesIO(png)) for png in out["image_png"]]
    assert all(im.size == images[0].size for im in images) and images[0].mode == "RGB"
    again = model.predict(pd.DataFrame({"prompt": ["a red circle"]}), params={"seed": 3})
    assert again["image_png"][0] == out["image_png"][0]  # seeded: the same picture
