"""The store below the API: unanswered assignments expire, the consensus follows commit order, and the schema (with the
constraints that make votes idempotent) also compiles for PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infinity_preference.db import Assignment, Base, Pair
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

ALL = ("overall", "prompt", "aesthetics")


def test_an_unanswered_pair_goes_to_another_rater_after_the_ttl(store: Any, make_run: Callable[..., Path],
                                                                prompts: tuple) -> None:  # fmt: skip
    runs = [
        (None, str(make_run(n, color=c, model=n, prompts=prompts[:1]))) for n, c in (("r", (9, 0, 0)), ("b", (0, 0, 9)))
    ]
    study = store.create_study("one pair", runs)
    assert study["progress"]["pairs"] == 1
    ann, bob, cy = (r["token"] for r in store.invite(study["id"], ["ann", "bob", "cy"]))
    held = store.next_pair(ann)
    store.submit(bob, store.next_pair(bob)["assignment"], "bob-00001", dict.fromkeys(ALL, "left"))
    assert store.next_pair(cy) is None  # two raters hold the pair: full
    with store.engine.begin() as connection:  # ann walked away an hour ago
        connection.execute(update(Assignment).where(Assignment.key == held["assignment"])
                           .values(assigned_at=dt.datetime(2000, 1, 1)))  # fmt: skip
    taken = store.next_pair(cy)
    assert taken is not None and taken["prompt"] == prompts[0][1]
    store.submit(cy, taken["assignment"], "cy-000001", dict.fromkeys(ALL, "tie"))
    # ann's late answer is still taken (and she gets nothing new); the consensus uses the first two committed
    assert store.submit(ann, held["assignment"], "ann-00001", dict.fromkeys(ALL, "tie")) == {"status": "recorded"}
    assert store.next_pair(ann) is None
    summary = store.study_summary(study["id"])
    assert summary["progress"]["ratings"] == 3 and summary["progress"]["third_ratings_asked"] == 1
    results = store.results(study["id"])
    # bob and cy disagree on every criterion (one side vs tie), ann's tie is the third rating: tie
    assert results["comparisons"][0]["criteria"]["overall"]["tie"]["rate"] == 1.0


def test_the_schema_compiles_for_postgresql() -> None:
    ddl = {
        name: str(CreateTable(table).compile(dialect=postgresql.dialect()))
        for name, table in Base.metadata.tables.items()
    }
    assert "UNIQUE (pair_id, rater_id, criterion)" in ddl["votes"]
    assert "UNIQUE (pair_id, rater_id)" in ddl["assignments"]
    assert "UNIQUE (token_hash)" in ddl["raters"]
    assert "BOOLEAN" in ddl["assignments"] and "TIMESTAMP WITHOUT TIME ZONE" in ddl["votes"]


def test_pairs_come_in_random_order_on_random_sides(store: Any, make_run: Callable[..., Path]) -> None:
    runs = [
        (None, str(make_run(n, color=c, model=n, images_per_prompt=4))) for n, c in (("r", (9, 0, 0)), ("b", (0, 0, 9)))
    ]
    orders, win_rates = [], []
    for name in ("first", "second"):  # two studies of the same runs: each has its own secret
        study = store.create_study(name, runs)
        (token,) = (r["token"] for r in store.invite(study["id"], ["ann"]))
        order = []
        while (pair := store.next_pair(token)) is not None:
            order.append(store.image_file(token, pair["left"].rsplit("/", 1)[1]))
            store.submit(token, pair["assignment"], f"ann-{len(order):06d}", dict.fromkeys(ALL, "left"))
        assert len(order) == 16
        orders.append([(p.parent.name, p.name) for p in order])  # (prompt id, sample) of each pair, as shown
        # "left" every time: the first model's share of wins is the share of pairs that showed it on the left
        with store._transaction() as s:
            lefts = s.scalars(select(Assignment.left_is_a).join(Pair, Pair.id == Assignment.pair_id)
                              .where(Pair.study_id == study["id"])).all()  # fmt: skip
        win_rates.append(sum(lefts) / len(lefts))
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])
    assert orders[0] != sorted(orders[0])
    assert all(0 < rate < 1 for rate in win_rates), win_rates


def test_concurrent_raters_and_retries_never_fail_or_double_count(store: Any, make_run: Callable[..., Path]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    runs = [
        (None, str(make_run(n, color=c, model=n, images_per_prompt=2))) for n, c in (("r", (9, 0, 0)), ("b", (0, 0, 9)))
    ]
    study = store.create_study("busy", runs)
    tokens = [r["token"] for r in store.invite(study["id"], [f"rater{i}" for i in range(6)])]

    def rate_all(token: str) -> list[str]:
        statuses = []
        while (pair := store.next_pair(token)) is not None:
            vote = (token, pair["assignment"], f"{token[:8]}-{pair['assignment'][:8]}", dict.fromkeys(ALL, "left"))
            with ThreadPoolExecutor(3) as retries:  # the same vote sent three times at once (a client retrying)
                statuses += [f.result()["status"] for f in [retries.submit(store.submit, *vote) for _ in range(3)]]
        return statuses

    with ThreadPoolExecutor(6) as pool:
        statuses = [s for result in pool.map(rate_all, tokens) for s in result]
    summary = store.study_summary(study["id"])
    assert statuses.count("recorded") == summary["progress"]["ratings"] and statuses.count(
        "duplicate"
    ) == 2 * statuses.count("recorded")
    assert summary["progress"]["votes"] == 3 * summary["progress"]["ratings"]
    assert summary["progress"]["pairs_complete"] == summary["progress"]["pairs"] == 8
