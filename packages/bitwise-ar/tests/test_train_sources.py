"""Data sources by name: the built-in synthetic source, entry-point plugins resolved lazily, one-line errors."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
import torch
from bitwise_ar.train import sources
from bitwise_ar.train.config import load_config
from bitwise_ar.train.sources import build_source, source_names


def _build(*overrides: str, rank: int = 0, world_size: int = 1, batch_size: int = 2):
    config = load_config(None, list(overrides))
    return build_source(config.data, rank=rank, world_size=world_size, batch_size=batch_size, stride=8)


def test_synthetic_source_is_the_same_stream_on_any_number_of_workers():
    one = _build("data.source=synthetic", "data.image_size=32", batch_size=4)
    ranks = [_build("data.source=synthetic", "data.image_size=32", rank=r, world_size=2) for r in range(2)]
    for _ in range(2):
        images, captions, keys = next(iter(one))
        parts = [next(iter(r)) for r in ranks]
        assert keys == parts[0][2] + parts[1][2] and captions == parts[0][1] + parts[1][1]
        assert torch.equal(images, torch.cat([parts[0][0], parts[1][0]]))
        assert images.shape == (4, 3, 32, 32) and -1 <= images.min() < images.max() <= 1
    other_seed = next(iter(_build("data.source=synthetic", "data.image_size=32", "data.seed=1", batch_size=4)))[0]
    assert not torch.equal(other_seed, next(iter(_build("data.source=synthetic", "data.image_size=32", batch_size=4)))[0])
    resumed = _build("data.source=synthetic", "data.image_size=32", batch_size=4)
    resumed.load_state_dict(one.state_dict())
    assert torch.equal(next(iter(resumed))[0], next(iter(one))[0])
    with pytest.raises(ValueError, match="cannot resume"):
        _build("data.source=synthetic", "data.seed=3").load_state_dict(one.state_dict())


def test_an_entry_point_source_is_imported_only_when_named(monkeypatch):
    loaded = []

    class Recording(EntryPoint):
        def load(self):
            loaded.append(self.name)
            return super().load()

    fake = Recording(name="fake", value="bitwise_ar.train.sources:synthetic_source", group=sources.ENTRY_POINT_GROUP)
    monkeypatch.setattr(sources, "entry_points", lambda **kw: [fake] if kw.get("name") in (None, "fake") else [])
    assert "fake" in source_names()
    _build("data.source=synthetic")
    assert loaded == []
    images, _, keys = next(iter(_build("data.source=fake")))
    assert loaded == ["fake"] and keys == [0, 1] and images.shape[0] == 2


def test_unknown_or_missing_sources_are_one_line_naming_the_choices(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "entry_points", lambda **kw: [])  # as on an install without infinity-shapes
    with pytest.raises(ValueError) as err:
        _build("data.source=shapes")
    message = str(err.value)
    assert "'shapes' is neither an existing path nor a known source" in message and "synthetic (built in)" in message
    assert "'shapes' comes with the infinity-shapes package" in message and "\n" not in message
    with pytest.raises(ValueError, match=r"data\.source is not set"):
        _build()
    with pytest.raises(ValueError, match=r"options \['grid'\] do not apply to the synthetic source"):
        _build("data.source=synthetic", "data.options.grid=4")
    (tmp_path / "splits").mkdir()
    with pytest.raises(ValueError, match=r"data.options \['rows'\] only apply to a named source"):
        _build(f"data.source={tmp_path}", "data.options.rows=true")
