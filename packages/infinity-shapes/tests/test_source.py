"""The ``shapes`` data source: registered by entry point, renders with ``data.options``, resumes only when they match."""

from __future__ import annotations

import pytest
import torch
from bitwise_ar.pipeline import InfinityPipeline
from bitwise_ar.testing import TINY_VOCABULARY
from bitwise_ar.text_encoder import build_tiny_t5
from bitwise_ar.train.config import load_config
from bitwise_ar.train.sources import build_source, image_to_tensor, source_names
from bitwise_ar.train.trainer import ARTrainer
from infinity_shapes import RenderConfig, ShapesConfig, ShapesT2I
from infinity_shapes.recipe import demo_temperatures, export_pipeline


def _config(tmp_path, *overrides: str):
    base = [f"run.out_dir={tmp_path}", "data.source=shapes", "data.batch_size=2", "data.image_size=32",
            "train.steps=2", "optim.lr=1e-3", "run.checkpoint_every=1"]  # fmt: skip
    return load_config(None, base + list(overrides))


def test_the_installed_package_registers_shapes():
    assert source_names()["shapes"] == "infinity-shapes"


def test_shapes_source_renders_on_the_configured_lattice(tmp_path):
    config = _config(tmp_path, "data.image_size=64", "data.options.grid=4", "data.seed=5")
    images, captions, keys = next(iter(build_source(config.data, rank=0, world_size=1, batch_size=2, stride=8)))
    assert keys == [0, 1]
    expected = ShapesT2I(length=10, seed=5, config=ShapesConfig(render=RenderConfig(image_size=64, grid=4)))
    assert captions == [expected[0].caption, expected[1].caption]
    assert torch.equal(images[1], image_to_tensor(expected[1].image))
    assert not torch.equal(images[1], image_to_tensor(ShapesT2I(length=10, seed=5)[1].image))
    with pytest.raises(ValueError, match=r"options \['colour'\] unknown for the shapes source"):
        build_source(_config(tmp_path, "data.options.colour=1").data, rank=0, world_size=1, batch_size=2, stride=8)


def test_resuming_with_other_shapes_options_is_refused(tmp_path):
    ARTrainer(_config(tmp_path)).fit()
    with pytest.raises(ValueError, match=r"data.options: checkpoint \{\} vs config \{'ordered': True\}"):
        ARTrainer(_config(tmp_path, "data.options.ordered=true"))
    with pytest.raises(ValueError, match=r"data.source: checkpoint 'shapes' vs config 'synthetic'"):
        ARTrainer(_config(tmp_path, "data.source=synthetic"))


def test_export_pipeline_stores_the_demo_sampling(tmp_path):
    t5 = build_tiny_t5(tmp_path / "t5", TINY_VOCABULARY, d_model=32, num_layers=1, num_heads=2, d_ff=32)
    trainer = ARTrainer(_config(tmp_path / "run", f"model.text_encoder={t5}", "model.overrides.text_channels=32",
                                "train.steps=1", "run.checkpoint_every=0"))  # fmt: skip
    trainer.fit()
    pipe = InfinityPipeline.from_pretrained(export_pipeline(trainer, str(tmp_path / "pipe"), image_size=32))
    out = pipe(["two red circles to the left of a blue square"], image_size=pipe.defaults.image_size, seed=0)
    assert out.images[0].size == (32, 32)
    assert pipe.defaults.image_size == (32, 32) and pipe.defaults.sampling.cfg == 2.0
    # the demo's per-scale temperatures, one per scale of the stored size's schedule
    assert list(pipe.defaults.sampling.tau) == demo_temperatures(len(pipe.layout_for().schedule))
    assert demo_temperatures(5) == [1.5, 1.5, 1.0, 0.5, 0.5] and demo_temperatures(2) == [1.5, 1.5]
