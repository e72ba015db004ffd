"""ShapesT2I generation and the ShapesEval scorer."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from infinity_shapes import (
    BACKGROUND,
    ObjectGroup,
    PromptSpec,
    RenderConfig,
    ShapesT2I,
    aggregate,
    caption_words,
    eval_prompts,
    parse_caption,
    render,
    score_image,
    write_split,
)
from PIL import Image


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def test_dataset_is_deterministic_and_seed_dependent():
    a, b, c = ShapesT2I(length=8, seed=3), ShapesT2I(length=8, seed=3), ShapesT2I(length=8, seed=4)
    for i in range(8):
        assert a[i].caption == b[i].caption
        assert np.array_equal(np.asarray(a[i].image), np.asarray(b[i].image))
    assert [a[i].caption for i in range(8)] != [c[i].caption for i in range(8)]
    assert a[0].image.size == (64, 64)


def test_captions_round_trip_and_use_the_vocabulary():
    vocab = set(caption_words())
    ds = ShapesT2I(length=300, seed=1)
    tasks = set()
    for i in range(300):
        spec = ds.spec(i)
        assert parse_caption(spec.caption) == spec
        assert set(spec.caption.split()) <= vocab
        tasks.add(spec.task)
    assert tasks == {"single_object", "two_object", "counting", "colors", "position", "count_position"}
    assert parse_caption("Two red circles to the left of a blue square.").relation == "left of"


def test_bad_captions_and_specs_are_rejected_with_the_grammar():
    with pytest.raises(ValueError, match="not a ShapesT2I caption"):
        parse_caption("a photo of a dog")
    with pytest.raises(ValueError, match="valid colours"):
        ObjectGroup(color="purple", shape="circle")
    with pytest.raises(ValueError, match="must differ"):
        PromptSpec(task="two_object", groups=(ObjectGroup(color="red", shape="circle"),) * 2)


@pytest.mark.parametrize("size", [64, 128])
def test_scorer_passes_rendered_ground_truth(size):
    ds = ShapesT2I(
        length=120, seed=7, config=dataclasses.replace(ShapesT2I(length=1).config, render=RenderConfig(image_size=size))
    )
    result = aggregate([score_image(ds[i].image, ds[i].spec) for i in range(len(ds))], num_bootstrap=200)
    assert result.overall >= 0.99
    assert result.ci_low <= result.overall <= result.ci_high


def test_lattice_layouts_snap_boxes_and_still_score_perfectly():
    config = RenderConfig(image_size=64, grid=4)
    ds = ShapesT2I(length=150, seed=11, config=dataclasses.replace(ShapesT2I(length=1).config, render=config))
    for i in range(len(ds)):
        for p in ds[i].placements:
            corners = (p.cx - p.size / 2, p.cy - p.size / 2, p.size)
            assert all(v % 4 == 0 for v in corners), (i, p)
            assert p.cx - p.size / 2 >= 4 and p.cx + p.size / 2 <= 60
    result = aggregate([score_image(ds[i].image, ds[i].spec) for i in range(len(ds))], num_bootstrap=100)
    assert result.overall >= 0.99
    free = ShapesT2I(length=20, seed=11)
    assert any(p.cx % 1 for i in range(20) for p in free[i].placements)  # grid=0 keeps continuous positions
    with pytest.raises(ValueError, match="grid"):
        RenderConfig(image_size=64, grid=8)


def test_ordered_layouts_put_the_first_unrelated_group_on_the_left():
    base = ShapesT2I(length=1).config
    ordered = ShapesT2I(length=150, seed=5, config=dataclasses.replace(base, render=RenderConfig(ordered=True)))
    free = ShapesT2I(length=150, seed=5)
    unrelated = swapped = 0
    for i in range(len(ordered)):
        sample, plain = ordered[i], free[i]
        assert sample.spec == plain.spec
        if len(sample.spec.groups) < 2 or sample.spec.relation is not None:
            assert sample.placements == plain.placements  # relations and single groups are drawn as before
            continue
        first, second = ((g.color, g.shape) for g in sample.spec.groups)
        xs = {k: [p.cx for p in sample.placements if (p.color, p.shape) == k] for k in (first, second)}
        assert max(xs[first]) < 32 < min(xs[second]), (i, sample.caption)
        plain_xs = {k: [p.cx for p in plain.placements if (p.color, p.shape) == k] for k in (first, second)}
        unrelated += 1
        swapped += max(plain_xs[first]) > min(plain_xs[second])
    assert unrelated >= 30 and swapped > 0  # the default keeps open layouts, the first group often on the right
    result = aggregate([score_image(ordered[i].image, ordered[i].spec) for i in range(len(ordered))], num_bootstrap=100)
    assert result.overall >= 0.99


def test_row_layouts_put_a_group_in_a_line_one_object_per_slot():
    base = ShapesT2I(length=1).config
    config = dataclasses.replace(base, render=RenderConfig(ordered=True, rows=True))
    rows, free = ShapesT2I(length=200, seed=7, config=config), ShapesT2I(length=200, seed=7)
    jitter = config.render.row_jitter * 64
    lines = 0
    for i in range(len(rows)):
        sample = rows[i]
        assert sample.spec == free[i].spec
        for group in sample.spec.groups:
            centres = [(p.cx, p.cy) for p in sample.placements if (p.color, p.shape) == (group.color, group.shape)]
            assert len(centres) == group.count
            if group.count == 1:
                continue
            lines += 1
            # groups of several objects: counting (whole image, cut left to right) and count + position (a left /
            # right half is cut top to bottom, a top / bottom half left to right); slots span the 64 px side
            along, across = (1, 0) if sample.spec.relation in ("left of", "right of") else (0, 1)
            assert max(c[across] for c in centres) - min(c[across] for c in centres) <= 2 * jitter, sample.caption
            for k, c in enumerate(centres):
                assert abs(c[along] - (k + 0.5) * 64 / group.count) <= jitter + 1e-6, (sample.caption, k, c)
    assert lines >= 40
    result = aggregate([score_image(rows[i].image, rows[i].spec) for i in range(len(rows))], num_bootstrap=100)
    assert result.overall >= 0.99
    with pytest.raises(ValueError, match="rows and grid"):
        RenderConfig(rows=True, grid=4)


def _render(spec: PromptSpec, seed: int = 0) -> Image.Image:
    return render(spec, RenderConfig(), _rng(seed))[0]


def _checks(image: Image.Image, spec: PromptSpec) -> dict:
    return score_image(image, spec).checks


def test_wrong_colour_fails_only_the_colour_checks():
    spec = parse_caption("a red circle")
    checks = _checks(_render(parse_caption("a blue circle")), spec)
    assert checks["object"] is True and checks["color"] is False


def test_wrong_count_fails_the_count_check():
    spec = parse_caption("two green squares")
    checks = _checks(_render(parse_caption("three green squares")), spec)
    assert checks["object"] and checks["color"] and checks["count"] is False


def test_wrong_shape_fails_the_object_check():
    spec = parse_caption("a yellow triangle")
    checks = _checks(_render(parse_caption("a yellow square")), spec)
    assert checks["object"] is False and checks["color"] is False


def test_swapped_relation_fails_only_the_position_check():
    spec = parse_caption("two red circles to the left of a blue square")
    for seed in range(5):
        image = _render(parse_caption("two red circles to the right of a blue square"), seed)
        checks = _checks(image, spec)
        assert checks["object"] and checks["color"] and checks["count"]
        assert checks["position"] is False
    image = _render(parse_caption("a green triangle below a yellow circle"))
    assert _checks(image, parse_caption("a green triangle above a yellow circle"))["position"] is False


def test_blank_and_noise_images_score_zero():
    specs = eval_prompts(60, seed=5)
    blank = Image.new("RGB", (64, 64), BACKGROUND)
    noise = Image.fromarray(_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    for image in (blank, noise):
        assert aggregate([score_image(image, s) for s in specs], num_bootstrap=100).overall == 0.0


def test_bootstrap_interval_is_reproducible_and_brackets_the_mean():
    specs = eval_prompts(120, seed=9)
    blank = Image.new("RGB", (64, 64), BACKGROUND)
    # every other prompt of every task is drawn correctly, the rest left blank
    scores = [score_image(_render(s, i) if i % 2 else blank, s) for i, s in enumerate(specs)]
    first = aggregate(scores, seed=1)
    again = aggregate(scores, seed=1)
    assert first == again
    assert first.overall == pytest.approx(0.5)
    assert 0.3 < first.ci_low < first.overall < first.ci_high < 0.7
    assert first.num_prompts == 120
    assert len(eval_prompts(240)) == 240


def test_write_split_uses_the_official_jsonl_format(tmp_path):
    splits = write_split(tmp_path / "shapes", length=5, seed=0)
    (split,) = sorted(splits.glob("*.jsonl"))
    assert split.name == "1.000_000000005.jsonl"
    rows = [json.loads(line) for line in split.read_text().splitlines()]
    assert len(rows) == 5 and rows[0]["h_div_w"] == 1.0
    assert (tmp_path / "shapes" / rows[0]["image_path"]).is_file()
    assert rows[2]["long_caption"] == ShapesT2I(length=5, seed=0)[2].caption
