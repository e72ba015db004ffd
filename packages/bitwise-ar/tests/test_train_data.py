"""Training data input: official jsonl splits, webdataset shards, bucketing, resumable positions."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from bitwise_ar.train.data import (
    BucketedLoader,
    Record,
    choose_caption,
    load_image,
    load_records,
    parse_split_name,
    read_split_folder,
)
from PIL import Image


def test_official_toy_data_loads_with_zero_dropped_items(toy_data_dir):
    root = toy_data_dir
    table = read_split_folder(root / "splits")
    assert len(table) == 2500 and not table.skipped
    loader = BucketedLoader(table, batch_size=2, pn="0.06M", seed=0)
    # decode every distinct image once (the split cycles over ten photos)
    first = {}
    for index, record in enumerate(table.records):
        first.setdefault(record.image, index)
    for index in first.values():
        loaded = loader._load([index], loader.templates[index], 0, 0)
        assert loaded is not None and loaded.images_B3HW.shape == (1, 3, 336, 224)
    batch = next(iter(loader))
    assert batch.template == 1.5 and batch.images_B3HW.shape == (2, 3, 336, 224)
    assert batch.images_B3HW.min() >= -1.0 and batch.images_B3HW.max() <= 1.0
    assert loader.stats["loaded"] == len(first) + 2
    assert not (set(loader.stats) - {"loaded"})


def test_split_file_names_and_counts_are_checked(tmp_path, write_jsonl_split):
    assert parse_split_name("1.500_000002500.jsonl").template == 1.5
    with pytest.raises(ValueError, match="<h_div_w_template>_<num_examples>"):
        parse_split_name("train.jsonl")
    splits = write_jsonl_split(tmp_path / "data", length=3)
    (split,) = splits.glob("*.jsonl")
    split.rename(splits / "1.000_000000004.jsonl")
    with pytest.raises(ValueError, match=r"declares 4 examples but has 3 lines; rename it to '1.000_000000003.jsonl'"):
        read_split_folder(splits)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_split_folder(tmp_path / "nowhere")


def test_missing_and_corrupt_images_are_skipped_and_counted(tmp_path, write_jsonl_split):
    splits = write_jsonl_split(tmp_path / "data", length=6)
    (split,) = splits.glob("*.jsonl")
    rows = [json.loads(line) for line in split.read_text().splitlines()]
    (tmp_path / "data" / rows[1]["image_path"]).unlink()
    (tmp_path / "data" / rows[2]["image_path"]).write_bytes(b"not a png at all")
    rows[3] = "{broken json"
    split.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    table = read_split_folder(splits)
    assert len(table) == 4
    assert table.skipped == {"missing_image": 1, "bad_line": 1}
    loader = BucketedLoader(table, batch_size=2, image_size=64, seed=0, max_epochs=1)
    images = sum(len(b.captions) for b in loader)
    assert images == 3 and loader.stats == {"loaded": 3, "corrupt_image": 1}


def _write_shard(path: Path, samples: list[tuple[str, Image.Image, str, dict | None]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, image, caption, meta in samples:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            parts = {f"{key}.png": buffer.getvalue(), f"{key}.txt": caption.encode()}
            if meta is not None:
                parts[f"{key}.json"] = json.dumps(meta).encode()
            for name, data in parts.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards_bucket_by_aspect_ratio_and_resume_exactly(tmp_path, synthetic_images):
    ds = synthetic_images(12, seed=2)
    wide = [(f"w{i}", ds[i][0].resize((96, 64)), ds[i][1], None) for i in range(6)]
    square = [(f"s{i}", ds[i][0], ds[i][1], {"h_div_w": 1.0}) for i in range(6, 12)]
    _write_shard(tmp_path / "a.tar", wide[:3] + square[:3])
    _write_shard(tmp_path / "b.tar", wide[3:] + square[3:] + [("orphan", ds[0][0], "", None)])
    table = load_records(tmp_path)
    assert len(table) == 12 and table.skipped == {"incomplete_sample": 1}
    assert isinstance(table.records[0].image, tuple)

    def run(loader, n):
        it = iter(loader)
        return [next(it) for _ in range(n)]

    loader = BucketedLoader(table, batch_size=2, image_size=64, seed=5)
    batches = run(loader, 8)  # 6 batches per epoch: crosses into epoch 1
    for b in batches:
        expected = (64, 64) if b.template == 1.0 else (64, 80)  # 224x336 scaled by 1/4, snapped to 16
        assert b.images_B3HW.shape[-2:] == expected
    assert {b.template for b in batches} == {1.0, 0.666}
    resumed = BucketedLoader(table, batch_size=2, image_size=64, seed=5)
    resumed.load_state_dict(batches[4].position)
    again = run(resumed, 3)
    for a, b in zip(batches[5:], again):
        assert a.indices == b.indices and a.captions == b.captions
        assert torch.equal(a.images_B3HW, b.images_B3HW)
    with pytest.raises(ValueError, match="cannot resume"):
        BucketedLoader(table, batch_size=2, image_size=64, seed=6).load_state_dict(batches[0].position)


def test_ranks_get_disjoint_batches(tmp_path, write_jsonl_split):
    splits = write_jsonl_split(tmp_path / "s", length=16)
    table = read_split_folder(splits)
    plans = [BucketedLoader(table, batch_size=2, image_size=64, rank=r, world_size=2).plan(0) for r in range(2)]
    seen = [i for plan in plans for batch in plan for i in batch]
    assert len(plans[0]) == len(plans[1]) == 4 and sorted(seen) == list(range(16))
    # the plan is the same global batches on any number of workers: rank slices of 2 x 2 == 1 x 4
    whole = BucketedLoader(table, batch_size=4, image_size=64).plan(0)
    assert [a + b for a, b in zip(*plans, strict=True)] == whole


def test_cover_resize_and_caption_rules():
    image = Image.fromarray(np.tile(np.arange(200, dtype=np.uint8)[None, :, None], (100, 1, 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    out = load_image(buffer.getvalue(), (64, 64))
    assert out.shape == (3, 64, 64)
    # centre crop of a horizontal ramp: the middle column maps to the middle of the source
    assert abs(float(out[0, 32, 32]) - (100 / 127.5 - 1)) < 0.05
    record = Record(image="x", h_div_w=1.0, long_caption="One. Two two. Three three three. Four -- junk")
    rng = random.Random(0)
    assert choose_caption(record, rng) == "One. Two two. Three three three. Four"
    picks = {choose_caption(record, rng, short_caption_prob=0.5) for _ in range(50)}
    assert "One. Two two." in picks and all("junk" not in p for p in picks)
    assert any(p.count(".") >= 3 for p in picks)
