"""Scale schedules: official tables (paper Table 10), template lookup, aspect-ratio parsing, any-size generator."""

from __future__ import annotations

import itertools

import pytest
from infinity_scales import (
    RESOLUTIONS,
    TEMPLATES,
    get_image_size,
    get_scale_schedule,
    nearest_template,
    parse_aspect_ratio,
    schedule_for_latent,
    sequence_length,
)

# (template, pn) -> (pixels H x W, tokens incl. the start token), from the official tables (reference section 7)
OFFICIAL_SIZES = {
    1.0: [((256, 256), 521), ((512, 512), 2521), ((768, 768), 6425), ((1024, 1024), 10521)],
    1.25: [((320, 256), 614), ((560, 448), 2814), ((880, 704), 6854), ((1120, 896), 10774)],
    1.333: [((320, 240), 665), ((576, 432), 2657), ((960, 720), 7085), ((1152, 864), 10973)],
    1.5: [((336, 224), 533), ((624, 416), 2759), ((1008, 672), 6941), ((1248, 832), 10997)],
    1.75: [((336, 192), 472), ((672, 384), 2628), ((1120, 640), 7220), ((1344, 768), 11252)],
    2.0: [((352, 176), 451), ((736, 368), 2681), ((1184, 592), 7219), ((1440, 720), 11269)],
    2.5: [((400, 160), 555), ((800, 320), 2555), ((1280, 512), 6805), ((1600, 640), 10805)],
    3.0: [((432, 144), 509), ((864, 288), 2588), ((1440, 480), 7016), ((1776, 592), 11123)],
}
INVERSE = {1.25: 0.8, 1.333: 0.75, 1.5: 0.666, 1.75: 0.571, 2.0: 0.5, 2.5: 0.4, 3.0: 0.333}


def test_templates_and_resolutions():
    assert TEMPLATES == (1.0, 1.25, 0.8, 1.333, 0.75, 1.5, 0.666, 1.75, 0.571, 2.0, 0.5, 2.5, 0.4, 3.0, 0.333)
    assert RESOLUTIONS == ("0.06M", "0.25M", "0.60M", "1M")


@pytest.mark.parametrize("template", list(OFFICIAL_SIZES))
def test_official_sizes_and_token_counts(template):
    for pn, ((height, width), tokens) in zip(RESOLUTIONS, OFFICIAL_SIZES[template]):
        sched = get_scale_schedule(template, pn)
        assert get_image_size(template, pn) == (height, width)
        assert sequence_length(sched) == tokens
        assert len(sched) == {"0.06M": 7, "0.25M": 10, "0.60M": 12, "1M": 13}[pn]
        if template != 1.0:  # the inverse template is the transpose
            inv = get_scale_schedule(INVERSE[template], pn)
            assert inv == [(w, h) for h, w in sched]
            assert get_image_size(INVERSE[template], pn) == (width, height)


# fmt: off
def test_exact_tables_spot_checks():
    assert get_scale_schedule(1.0, "1M") == [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16), (20, 20),
                                             (24, 24), (32, 32), (40, 40), (48, 48), (64, 64)]
    assert get_scale_schedule(1.25, "0.06M") == [(1, 1), (2, 2), (3, 3), (5, 4), (10, 8), (15, 12), (20, 16)]
    assert get_scale_schedule(3.0, "1M")[-3:] == [(72, 24), (90, 30), (111, 37)]
    assert get_scale_schedule(0.333, "1M")[-1] == (37, 111)
    # prefixes: each resolution is a prefix of the 1M list
    for t in TEMPLATES:
        full = get_scale_schedule(t, "1M")
        for pn in RESOLUTIONS:
            sched = get_scale_schedule(t, pn)
            assert full[: len(sched)] == sched
# fmt: on


def test_template_lookup_tolerates_rounding_but_not_junk():
    assert get_scale_schedule(4 / 3, "0.06M") == get_scale_schedule(1.333, "0.06M")
    assert get_scale_schedule(2 / 3, "0.06M") == get_scale_schedule(0.666, "0.06M")
    with pytest.raises(ValueError, match="nearest_template"):
        get_scale_schedule(1.1, "1M")
    with pytest.raises(ValueError, match="unknown resolution"):
        get_scale_schedule(1.0, "2M")


def test_nearest_template_official_rule():
    assert nearest_template(1.0) == 1.0
    assert nearest_template(1.1) == 1.0
    assert nearest_template(1.125) == 1.0  # exact tie between 1.0 and 1.25 -> first in TEMPLATES order
    assert nearest_template(9 / 16) == 0.571
    assert nearest_template(10.0) == 3.0
    assert nearest_template(0.01) == 0.333
    with pytest.raises(ValueError):
        nearest_template(0.0)


def test_nearest_template_tie_goes_to_earlier_template():
    # exact binary ties: 1.125 (1.0 vs 1.25), 2.25 (2.0 vs 2.5), 2.75 (2.5 vs 3.0)
    assert nearest_template(1.125) == 1.0
    assert nearest_template(2.25) == 2.0
    assert nearest_template(2.75) == 2.5


def test_parse_aspect_ratio():
    assert parse_aspect_ratio("16:9") == pytest.approx(9 / 16)
    assert parse_aspect_ratio("9:16") == pytest.approx(16 / 9)
    assert parse_aspect_ratio("1:1") == 1.0
    assert parse_aspect_ratio("4x3") == pytest.approx(0.75)
    assert parse_aspect_ratio("1.5") == 1.5
    for bad in ["", "abc", "16:", "0:9", "-1", "inf", "1:2:3"]:
        with pytest.raises(ValueError):
            parse_aspect_ratio(bad)


def test_schedule_for_latent_equals_official_tables():
    for t in TEMPLATES:
        for pn in RESOLUTIONS:
            sched = get_scale_schedule(t, pn)
            assert schedule_for_latent(*sched[-1]) == sched
            assert schedule_for_latent(*sched[-1], num_scales=len(sched)) == sched


@pytest.mark.parametrize("hw", [(1, 1), (1, 7), (5, 3), (17, 23), (16, 48), (100, 3), (80, 80), (128, 96), (7, 200)])
def test_schedule_for_any_latent_is_monotone(hw):
    sched = schedule_for_latent(*hw)
    assert sched[0] == (1, 1) and sched[-1] == hw
    for (h0, w0), (h1, w1) in itertools.pairwise(sched):
        assert h0 <= h1 and w0 <= w1 and (h0, w0) != (h1, w1)


@pytest.mark.parametrize("k", [1, 2, 4, 9, 16, 31])
def test_schedule_with_requested_number_of_scales(k):
    sched = schedule_for_latent(16, 16, num_scales=k)
    assert len(sched) == k and sched[-1] == (16, 16)
    assert len(set(sched)) == k
    if k > 1:
        assert sched[0] == (1, 1)


def test_schedule_errors():
    with pytest.raises(ValueError, match="at most"):
        schedule_for_latent(3, 3, num_scales=6)
    with pytest.raises(ValueError):
        schedule_for_latent(0, 4)
    with pytest.raises(ValueError):
        schedule_for_latent(4, 4, num_scales=0)
