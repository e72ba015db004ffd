"""The model card README.md: written by save_pretrained, read back by from_pretrained, present in the packaged demo."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from bitwise_ar.cli import DEMO_MODEL_DIR
from bitwise_ar.model_card import CARD_FILE, ModelCard, read_model_card
from bitwise_ar.pipeline import InfinityPipeline
from bitwise_ar.testing import build_tiny_pipeline


def _front_matter(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("\n---\n", 1)[0][4:]), text


def test_save_pretrained_writes_a_card_that_round_trips(tmp_path):
    pipe = InfinityPipeline.from_pretrained(build_tiny_pipeline(tmp_path / "tiny", seed=0))
    front, _ = _front_matter(tmp_path / "tiny" / CARD_FILE)
    assert pipe.card == ModelCard()  # nothing said yet: the defaults, "Not recorded." as training
    assert front["license"] == "mit" and front["pipeline_tag"] == "text-to-image" and front["library_name"] == "bitwise-ar"
    assert front["sampling"] == dataclasses.asdict(pipe.defaults.sampling)
    assert front["resolution"] == pipe.defaults.resolution and "image_size" not in front
    assert front["parameters"]["transformer"] == sum(p.numel() for p in pipe.transformer.parameters())

    card = ModelCard(summary="A tiny test model: ünïcode, \"quotes\" and: colons.", training="Two steps.\n\nOn CPU.",
                     license="apache-2.0", tags=("test",))  # fmt: skip
    pipe.card = card
    pipe.defaults = dataclasses.replace(pipe.defaults, image_size=(32, 48))
    first = pipe.save_pretrained(tmp_path / "again")
    loaded = InfinityPipeline.from_pretrained(first)
    assert loaded.card == card
    front, text = _front_matter(first / CARD_FILE)
    assert front["image_size"] == [32, 48] and "resolution" not in front and front["tags"][-1] == "test"
    assert "Two steps.\n\nOn CPU." in text and "apache-2.0." in text  # the body repeats it for people
    second = loaded.save_pretrained(tmp_path / "copy" / "again")  # same folder name: the same card, byte for byte
    assert (second / CARD_FILE).read_text(encoding="utf-8") == text


def test_a_card_without_front_matter_is_a_clear_error(tmp_path):
    path = tmp_path / CARD_FILE
    path.write_text("# just a readme\n", encoding="utf-8")
    with pytest.raises(ValueError, match="starts with YAML front matter"):
        read_model_card(path)
    path.write_text("---\n[unclosed\n---\nbody\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid YAML"):
        read_model_card(path)


@pytest.mark.skipif(not (DEMO_MODEL_DIR / "pipeline.json").is_file(), reason="no packaged demo model")
def test_packaged_demo_has_its_card_in_sync_with_its_files(tmp_path):
    pipe = InfinityPipeline.from_pretrained(DEMO_MODEL_DIR)
    assert "ShapesT2I" in pipe.card.summary and "shapes_demo.toml" in pipe.card.training
    # The committed card is exactly what the writer produces from the folder's own files (sampling, size, counts).
    out = tmp_path / DEMO_MODEL_DIR.name
    out.mkdir()
    assert pipe.write_model_card(out).read_text(encoding="utf-8") == (DEMO_MODEL_DIR / CARD_FILE).read_text(encoding="utf-8")
