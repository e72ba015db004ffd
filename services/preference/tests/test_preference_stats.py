"""The study's statistics on cases small enough to compute by hand."""

from __future__ import annotations

import pytest
from infinity_preference.stats import cohen_kappa, consensus, fleiss_kappa, percent_agreement, win_tie_loss


def test_consensus_two_raters_then_a_third_on_disagreement() -> None:
    assert consensus([]) is None and consensus(["a"]) is None
    assert consensus(["a", "a"]) == "a" and consensus(["tie", "tie"]) == "tie"
    assert consensus(["a", "a", "b"]) == "a"  # a third rating after an agreement changes nothing
    assert consensus(["a", "b"]) is None  # disagreement: wait for the third rater
    assert consensus(["a", "b", "b"]) == "b" and consensus(["a", "tie", "a"]) == "a"
    assert consensus(["a", "b", "tie"]) == "tie"  # no majority
    assert consensus(["a", "a", "b"], raters=3) is None and consensus(["a", "a", "b", "a"], raters=3) == "a"
    assert consensus(["a", "a", "b", "b"], raters=3) == "tie"  # 2 of 4 is no strict majority


def test_cohen_kappa_by_hand() -> None:
    # 50 items: both "a" 20, first a / second b 5, first b / second a 10, both b 15.
    first = ["a"] * 25 + ["b"] * 25
    second = ["a"] * 20 + ["b"] * 5 + ["a"] * 10 + ["b"] * 15
    # p_o = 35/50 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = (0.7-0.5)/(1-0.5) = 0.4
    assert percent_agreement(first, second) == pytest.approx(0.7)
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert cohen_kappa(["a", "b", "tie"], ["a", "b", "tie"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)  # p_o = 0, p_e = 0.5
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # p_e = 1: undefined
    assert cohen_kappa([], []) is None and percent_agreement([], []) is None
    with pytest.raises(ValueError):
        percent_agreement(["a"], [])


def test_fleiss_kappa_by_hand_and_the_textbook_table() -> None:
    # two raters, two items, full agreement on different labels: P = 1, P_e = 0.5 -> 1
    assert fleiss_kappa([[2, 0, 0], [0, 2, 0]]) == pytest.approx(1.0)
    # every item split: P = 0, P_e = 0.5 -> -1
    assert fleiss_kappa([[1, 1, 0], [1, 1, 0]]) == pytest.approx(-1.0)
    # Fleiss (1971) style worked example: 10 items, 14 raters, 5 categories -> P = 0.378, P_e = 0.213, kappa = 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]  # fmt: skip
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=5e-4)
    assert fleiss_kappa([[2, 0, 0], [2, 0, 0]]) is None and fleiss_kappa([]) is None
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[2, 0, 0], [1, 0, 0]])


def _rows(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"prompt_id": p, "outcome": o} for p, o in pairs]


def test_win_tie_loss_rates_and_bootstrap_intervals() -> None:
    result = win_tie_loss(_rows(("p1", "a"), ("p2", "a"), ("p3", "tie"), ("p4", "b")), num_samples=500)
    assert result["n"] == 4
    assert (result["win"]["rate"], result["tie"]["rate"], result["loss"]["rate"]) == (0.5, 0.25, 0.25)
    for name in ("win", "tie", "loss"):
        low, high = result[name]["ci"]
        assert 0 <= low <= result[name]["rate"] <= high <= 1
    # all wins: every resample is all wins
    assert win_tie_loss(_rows(("p1", "a"), ("p2", "a")), num_samples=200)["win"]["ci"] == [1.0, 1.0]
    # two prompts, one win one loss: resampled win rates are 0, 0.5, 1 with probability 1/4, 1/2, 1/4 -> [0, 1]
    assert win_tie_loss(_rows(("p1", "a"), ("p2", "b")), num_samples=2000)["win"]["ci"] == [0.0, 1.0]
    # the same two outcomes on ONE prompt move together (prompt-level resampling): the interval collapses
    assert win_tie_loss(_rows(("p1", "a"), ("p1", "b")), num_samples=200)["win"]["ci"] == [0.5, 0.5]
    # deterministic given the seed; nothing decided -> no rate
    rows = _rows(*[(f"p{i}", "ab"[i % 3 == 0]) for i in range(12)])
    assert win_tie_loss(rows, seed=3) == win_tie_loss(rows, seed=3)
    empty = win_tie_loss([], num_samples=100)
    assert empty["n"] == 0 and empty["win"] == {"rate": None, "ci": None}
