"""The HTTP API in process on a temporary SQLite database: a whole study, idempotent votes, and double-blindness."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CHOICES_ALL = ("overall", "prompt", "aesthetics")


def _create(client: Any, headers: dict[str, str], runs: tuple[Path, ...], name: str = "red vs blue") -> dict[str, Any]:
    body = {"name": name, "runs": [{"path": str(r)} for r in runs]}
    response = client.post("/api/admin/studies", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def _invite(client: Any, headers: dict[str, str], study: int, *names: str) -> list[str]:
    response = client.post(f"/api/admin/studies/{study}/raters", json={"names": list(names)}, headers=headers)
    assert response.status_code == 201, response.text
    return [r["token"] for r in response.json()]


def _red_side(client: Any, pair: dict[str, Any]) -> str:
    """What a simulated rater sees: which side shows the red model's image."""
    reds = {}
    for side in ("left", "right"):
        response = client.get(pair[side])
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        reds[side] = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))[..., 0].mean()
    return max(reds, key=reds.get)


def _rate_all(client: Any, token: str, prefer: str, seen: list[str] | None = None) -> int:
    """Rate every pair offered: ``prefer`` "red", "blue" or "tie" on all three criteria; returns pairs rated."""
    count = 0
    while True:
        pair = client.get(f"/api/rater/{token}/next").json()
        if pair.get("done"):
            return count
        if seen is not None:
            seen.append(json.dumps(pair))
        red = _red_side(client, pair)
        side = "tie" if prefer == "tie" else red if prefer == "red" else {"left": "right", "right": "left"}[red]
        body = {"assignment": pair["assignment"], "client_id": f"vote-{token[:6]}-{count:04d}",
                "choices": dict.fromkeys(CHOICES_ALL, side)}  # fmt: skip
        response = client.post(f"/api/rater/{token}/votes", json=body)
        assert response.json() == {"status": "recorded"}, response.text
        count += 1


def test_a_whole_study_two_ratings_then_a_third_on_disagreement(
    client: Any, admin_headers: dict[str, str], two_runs: tuple[Path, Path]
) -> None:
    study = _create(client, admin_headers, two_runs)
    assert [m["label"] for m in study["models"]] == ["red-model", "blue-model"]
    assert study["progress"]["pairs"] == 4 and study["benchmark"] == "shapes"
    first, second, third, fourth = _invite(client, admin_headers, study["id"], "ann", "bob", "cy", "dee")
    seen: list[str] = []
    assert _rate_all(client, first, "red", seen) == 4
    progress = client.get(f"/api/admin/studies/{study['id']}", headers=admin_headers).json()["progress"]
    assert progress["ratings"] == 4 and progress["pairs_complete"] == 0 and progress["votes"] == 12
    assert _rate_all(client, second, "blue", seen) == 4  # every pair now disagrees: each asks for a third rater
    progress = client.get(f"/api/admin/studies/{study['id']}", headers=admin_headers).json()["progress"]
    assert progress["third_ratings_asked"] == 4 and progress["pairs_complete"] == 0
    assert _rate_all(client, third, "red", seen) == 4
    assert _rate_all(client, fourth, "red") == 0  # nothing left: no pair is rated more than it needs
    summary = client.get(f"/api/admin/studies/{study['id']}", headers=admin_headers).json()
    assert summary["progress"]["pairs_complete"] == 4 and summary["progress"]["ratings"] == 12
    assert [(r["name"], r["rated"]) for r in summary["raters"]] == [("ann", 4), ("bob", 4), ("cy", 4), ("dee", 0)]

    # raters saw prompts and opaque links only: no model label, run folder or file name anywhere
    for text in seen:
        for secret in ("red-model", "blue-model", str(two_runs[0]), "/runs/", "0000.png"):
            assert secret not in text

    results = client.get(f"/api/admin/studies/{study['id']}/results", headers=admin_headers).json()
    (comparison,) = results["comparisons"]
    assert (comparison["model_a"], comparison["model_b"]) == ("red-model", "blue-model")
    for criterion in CHOICES_ALL:
        entry = comparison["criteria"][criterion]
        assert entry["n"] == 4 and entry["win"]["rate"] == 1.0 and entry["win"]["ci"] == [1.0, 1.0]
        assert entry["loss"]["rate"] == 0.0 and entry["tie"]["rate"] == 0.0
        assert {c: s["n"] for c, s in entry["categories"].items()} == {"counting": 2, "position": 1, "single_object": 1}
        # first two ratings always disagree (red vs blue): p_o = 0, p_e = 0 -> Cohen 0; each item [1, 1, 0] -> Fleiss -1
        agreement = results["agreement"][criterion]
        assert agreement["items"] == 4 and agreement["percent_agreement"] == 0.0
        assert agreement["cohen_kappa"] == 0.0 and agreement["fleiss_kappa"] == -1.0


def test_agreeing_raters_need_no_third_and_ties_count_as_ties(
    client: Any, admin_headers: dict[str, str], two_runs: tuple[Path, Path]
) -> None:
    study = _create(client, admin_headers, two_runs)
    first, second, third = _invite(client, admin_headers, study["id"], "ann", "bob", "cy")
    assert _rate_all(client, first, "tie") == 4 and _rate_all(client, second, "tie") == 4
    assert _rate_all(client, third, "red") == 0
    results = client.get(f"/api/admin/studies/{study['id']}/results", headers=admin_headers).json()
    entry = results["comparisons"][0]["criteria"]["overall"]
    assert entry["tie"]["rate"] == 1.0 and entry["win"]["rate"] == 0.0
    assert results["agreement"]["overall"]["percent_agreement"] == 1.0
    assert results["agreement"]["overall"]["cohen_kappa"] is None  # one label throughout: undefined, not 1


def test_three_models_give_every_model_pair(client: Any, admin_headers: dict[str, str],
                                            make_run: Callable[..., Path]) -> None:  # fmt: skip
    runs = tuple(make_run(n, color=c, model=n) for n, c in (("r", (250, 0, 0)), ("g", (0, 250, 0)), ("b", (0, 0, 250))))
    study = _create(client, admin_headers, runs)
    assert study["progress"]["pairs"] == 3 * 4
    results = client.get(f"/api/admin/studies/{study['id']}/results", headers=admin_headers).json()
    assert [(c["model_a"], c["model_b"]) for c in results["comparisons"]] == [("r", "g"), ("r", "b"), ("g", "b")]
    assert results["comparisons"][0]["criteria"]["overall"]["n"] == 0


def test_votes_are_idempotent_and_final(
    client: Any, admin_headers: dict[str, str], two_runs: tuple[Path, Path]
) -> None:
    study = _create(client, admin_headers, two_runs)
    (token,) = _invite(client, admin_headers, study["id"], "ann")
    pair = client.get(f"/api/rater/{token}/next").json()
    assert client.get(f"/api/rater/{token}/next").json() == pair  # the open pair again (a reload), not a new one
    body = {"assignment": pair["assignment"], "client_id": "c0ffee-0001", "choices": dict.fromkeys(CHOICES_ALL, "left")}
    assert client.post(f"/api/rater/{token}/votes", json=body).json() == {"status": "recorded"}
    assert client.post(f"/api/rater/{token}/votes", json=body).json() == {"status": "duplicate"}
    changed = {**body, "choices": {**body["choices"], "overall": "right"}}
    response = client.post(f"/api/rater/{token}/votes", json=changed)
    assert response.status_code == 409 and "votes are final" in response.json()["error"]["message"]
    response = client.post(f"/api/rater/{token}/votes", json={**body, "client_id": "another-client"})
    assert response.status_code == 409
    progress = client.get(f"/api/admin/studies/{study['id']}", headers=admin_headers).json()["progress"]
    assert progress["votes"] == 3 and progress["ratings"] == 1
    assert client.get(f"/api/rater/{token}").json() == {"name": "ann", "rated": 1, "criteria": list(CHOICES_ALL)}


def test_raters_cannot_reach_other_raters_or_the_operator(
    client: Any, admin_headers: dict[str, str], two_runs: tuple[Path, Path]
) -> None:
    study = _create(client, admin_headers, two_runs)
    alice, bob = _invite(client, admin_headers, study["id"], "alice", "bob")
    pair_a = client.get(f"/api/rater/{alice}/next").json()
    pair_b = client.get(f"/api/rater/{bob}/next").json()
    body_a = {
        "assignment": pair_a["assignment"],
        "client_id": "alice-000001",
        "choices": dict.fromkeys(CHOICES_ALL, "left"),
    }
    assert client.post(f"/api/rater/{alice}/votes", json=body_a).json() == {"status": "recorded"}

    # Bob cannot vote on, change, or replay Alice's pair, nor see her images through his token
    for body in (body_a, {**body_a, "client_id": "bob-0000001"}):
        response = client.post(f"/api/rater/{bob}/votes", json=body)
        assert response.status_code == 404 and response.json()["error"]["message"] == "no such pair for this rater"
    for side in ("left", "right"):
        key = pair_a[side].rsplit("/", 1)[1]
        assert client.get(f"/api/rater/{bob}/image/{key}").status_code == 404
        assert client.get(f"/api/rater/{alice}/image/{key}").status_code == 200
    # ... nor vote on a pair never assigned to anyone, nor with a made-up or unknown token
    assert client.post(f"/api/rater/{bob}/votes", json={**body_a, "assignment": "made-up-key"}).status_code == 404
    assert client.get("/api/rater/not-a-token/next").status_code == 404
    # Bob's own view shows his progress only (Alice's vote is invisible to him)
    assert client.get(f"/api/rater/{bob}").json()["rated"] == 0
    assert client.get(f"/api/rater/{bob}/next").json() == pair_b

    # every operator route needs the admin token: no token, a rater's token, a wrong token -> 401
    routes = [("get", "/api/admin/studies"), ("get", f"/api/admin/studies/{study['id']}"),
              ("get", f"/api/admin/studies/{study['id']}/results"), ("post", f"/api/admin/studies/{study['id']}/mlflow"),
              ("post", f"/api/admin/studies/{study['id']}/raters"), ("post", "/api/admin/studies")]  # fmt: skip
    for method, path in routes:
        for headers in ({}, {"Authorization": f"Bearer {alice}"}, {"Authorization": "Bearer x" * 3},
                        {"Authorization": admin_headers["Authorization"] + "x"}):  # fmt: skip
            response = getattr(client, method)(path, headers=headers, **({"json": {}} if method == "post" else {}))
            assert response.status_code == 401, (path, headers, response.text)
    # the model mapping reaches the operator only, and the image responses carry no file name or date
    assert "red-model" in client.get(f"/api/admin/studies/{study['id']}", headers=admin_headers).text
    image = client.get(pair_b["left"])
    assert not {"last-modified", "etag", "content-disposition"} & set(image.headers)


HOSTILE: dict[str, tuple[str, str, Any, int, str]] = {
    # name: (method, path template, body, status, message fragment); {study}/{token} are filled in
    "not-json": ("post", "/api/rater/{token}/votes", b"{not json", 422, "JSON"),
    "unknown-field": (
        "post",
        "/api/rater/{token}/votes",
        {"assignment": "x", "client_id": "12345678", "choices": {}, "model": "a"},
        422,
        "model",
    ),
    "missing-choice": (
        "post",
        "/api/rater/{token}/votes",
        {"assignment": "{assignment}", "client_id": "12345678", "choices": {"overall": "left"}},
        422,
        "exactly the criteria",
    ),
    "bad-side": (
        "post",
        "/api/rater/{token}/votes",
        {
            "assignment": "{assignment}",
            "client_id": "12345678",
            "choices": {"overall": "up", "prompt": "left", "aesthetics": "left"},
        },
        422,
        "'left', 'right' or 'tie'",
    ),
    "short-client-id": (
        "post",
        "/api/rater/{token}/votes",
        {"assignment": "{assignment}", "client_id": "1", "choices": {}},
        422,
        "client_id",
    ),
    "choices-not-a-dict": (
        "post",
        "/api/rater/{token}/votes",
        {"assignment": "a", "client_id": "12345678", "choices": ["left"]},
        422,
        "choices",
    ),
    "huge-body": (
        "post",
        "/api/rater/{token}/votes",
        {"assignment": "a" * 100_000, "client_id": "12345678", "choices": {}},
        413,
        "limit",
    ),
    "lone-surrogate-name": (
        "post",
        "/api/admin/studies/{study}/raters",
        b'{"names": ["\\ud800"]}',
        422,
        "valid string",
    ),
    "empty-names": ("post", "/api/admin/studies/{study}/raters", {"names": []}, 422, "names"),
    "blank-name": ("post", "/api/admin/studies/{study}/raters", {"names": ["  "]}, 422, "non-empty"),
    "unknown-study": ("get", "/api/admin/studies/999/results", None, 404, "no study 999"),
    "study-id-not-int": ("get", "/api/admin/studies/abc", None, 422, "study_id"),
    "one-run": ("post", "/api/admin/studies", {"name": "x", "runs": [{"path": "/tmp"}]}, 422, "runs"),
    "missing-run": (
        "post",
        "/api/admin/studies",
        {"name": "x", "runs": [{"path": "/nowhere/a"}, {"path": "/nowhere/b"}]},
        422,
        "/nowhere/a not found",
    ),
    "nul-in-path": (
        "post",
        "/api/admin/studies",
        {"name": "x", "runs": [{"path": "/a\u0000b"}, {"path": "/c"}]},
        422,
        "",
    ),
    "int-for-name": ("post", "/api/admin/studies", {"name": 5, "runs": []}, 422, "name"),
}


def test_hostile_requests_get_a_clear_4xx(
    client: Any, admin_headers: dict[str, str], two_runs: tuple[Path, Path]
) -> None:
    study = _create(client, admin_headers, two_runs)
    (token,) = _invite(client, admin_headers, study["id"], "ann")
    assignment = client.get(f"/api/rater/{token}/next").json()["assignment"]
    for name, (method, template, body, status, fragment) in HOSTILE.items():
        path = template.format(study=study["id"], token=token)
        kwargs: dict[str, Any] = {"headers": dict(admin_headers)}
        if isinstance(body, bytes):
            kwargs["content"], kwargs["headers"]["content-type"] = body, "application/json"
        elif body is not None:
            kwargs["json"] = json.loads(json.dumps(body).replace("{assignment}", assignment))
        response = getattr(client, method)(path, **kwargs)
        assert response.status_code == status, (name, response.text)
        if status >= 400:
            assert fragment in response.json()["error"]["message"], (name, response.text)
    # the service is still fine: the pair can be rated
    ok = {"assignment": assignment, "client_id": "12345678", "choices": dict.fromkeys(CHOICES_ALL, "tie")}
    assert client.post(f"/api/rater/{token}/votes", json=ok).json() == {"status": "recorded"}


def test_mismatched_runs_are_refused_by_the_api(client: Any, admin_headers: dict[str, str],
                                                make_run: Callable[..., Path]) -> None:  # fmt: skip
    runs = (make_run("a", color=(1, 1, 1), model="a"), make_run("b", color=(2, 2, 2), model="b", seed=3))
    response = client.post("/api/admin/studies", json={"name": "x", "runs": [{"path": str(r)} for r in runs]},
                           headers=admin_headers)  # fmt: skip
    assert (
        response.status_code == 422 and "used different seeds (seed=0 vs seed=3)" in response.json()["error"]["message"]
    )
    assert client.get("/api/admin/studies", headers=admin_headers).json() == []


def test_an_image_broken_or_deleted_after_the_study_began_is_a_clear_error(
    client: Any, admin_headers: dict[str, str], two_runs: tuple[Path, Path]
) -> None:
    study = _create(client, admin_headers, two_runs)
    (token,) = _invite(client, admin_headers, study["id"], "ann")
    pair = client.get(f"/api/rater/{token}/next").json()
    for image in two_runs[1].rglob("*.png"):
        image.write_bytes(b"not a png")
    broken = [client.get(pair[s]) for s in ("left", "right")]
    assert sorted(r.status_code for r in broken) == [200, 500]
    assert "cannot be read on the server" in next(r for r in broken if r.status_code == 500).text
    for image in two_runs[0].rglob("*.png"):
        image.unlink()
    statuses = {client.get(pair[side]).status_code for side in ("left", "right")}
    assert statuses == {500, 404}  # one side is the red run's image, the other the blue run's
    missing = next(client.get(pair[s]) for s in ("left", "right") if client.get(pair[s]).status_code == 404)
    assert "gone from the server" in missing.json()["error"]["message"]


def test_images_reach_raters_without_the_files_metadata(
    client: Any, admin_headers: dict[str, str], two_runs: tuple[Path, Path]
) -> None:
    from PIL import PngImagePlugin

    for run in two_runs:  # some generators write their name and settings into the PNG
        for path in run.rglob("*.png"):
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", f"model: {run.name}-model, steps 28")
            Image.open(path).save(path, pnginfo=info)
    study = _create(client, admin_headers, two_runs)
    (token,) = _invite(client, admin_headers, study["id"], "ann")
    pair = client.get(f"/api/rater/{token}/next").json()
    for side in ("left", "right"):
        served = client.get(pair[side])
        assert served.headers["content-type"] == "image/png" and b"model" not in served.content
        image = Image.open(io.BytesIO(served.content))
        assert image.info == {} or set(image.info) <= {"dpi"}, image.info
        assert image.size == (16, 16)


def test_fuzzed_vote_bodies_never_break_the_service(client: Any, admin_headers: dict[str, str],
                                                    two_runs: tuple[Path, Path]) -> None:  # fmt: skip
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    study = _create(client, admin_headers, two_runs)
    (token,) = _invite(client, admin_headers, study["id"], "ann")
    assignment = client.get(f"/api/rater/{token}/next").json()["assignment"]
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    )
    fields = st.fixed_dictionaries({}, optional={
        "assignment": st.sampled_from([assignment, "nope"]) | values,
        "client_id": st.text(min_size=0, max_size=70) | values,
        "choices": st.dictionaries(st.sampled_from([*CHOICES_ALL, "style"]), st.sampled_from(["left", "right", "tie", "up"]) | values, max_size=4) | values,
        "extra": values,
    })  # fmt: skip

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(fields)
    def check(body: dict[str, Any]) -> None:
        response = client.post(f"/api/rater/{token}/votes", json=body)
        assert response.status_code in (200, 404, 409, 422), (body, response.text)
        if response.status_code != 200:
            assert response.json()["error"]["message"]

    check()
    progress = client.get(f"/api/admin/studies/{study['id']}", headers=admin_headers).json()["progress"]
    assert progress["votes"] in (0, 3)  # at most the one pair, rated once
