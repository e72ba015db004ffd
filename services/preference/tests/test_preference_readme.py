"""The README's commands: the operator's shell steps run as written (then the results reach MLflow); the other start
lines parse and fail cleanly on a bad setting or a missing driver. The first `serve` line is the browser test's."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from infinity_preference.cli import main

SERVICE_DIR = Path(__file__).resolve().parents[1]
REPO = SERVICE_DIR.parents[1]
README = (SERVICE_DIR / "README.md").read_text()
ROOT_README = (REPO / "README.md").read_text()


def _commands() -> list[list[str]]:
    lines = re.findall(r"^uv run (infinity-preference [^\n]*)$", README, flags=re.M)
    return [shlex.split(line.split("#")[0])[1:] for line in lines]


@pytest.mark.slow  # MLflow's SQLite store sets itself up (~10-20 s on 2 busy cores)
def test_the_operator_steps_as_written(make_run: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    pytest.importorskip("mlflow", reason="needs the mlflow extra: uv sync (infinity-preference[mlflow])")
    from infinity_preference.db import make_engine
    from infinity_preference.study import StudyStore

    commands = _commands()
    assert [c[0] for c in commands] == ["serve", "serve", "serve", "create-study", "invite", "results"]
    make_run("ours", color=(250, 0, 0), model="ours")
    make_run("baseline", color=(0, 0, 250), model="baseline")
    monkeypatch.chdir(tmp_path)  # the README's relative paths: runs/ours, preference-data/
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    create, invite, results = commands[3:]
    assert main(create) == 0
    study = json.loads(capsys.readouterr().out)
    assert [m["label"] for m in study["models"]] == ["ours", "baseline"] and study["progress"]["pairs"] == 4
    assert main(invite) == 0
    raters = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in raters] == ["ann", "bob", "cy"] and all(
        r["link"] == f"/rate/{r['token']}" for r in raters
    )

    # two raters agree on every pair ("left" is a random model per pair, so the verdicts are mixed but decided)
    store = StudyStore(make_engine("sqlite:///preference-data/preference.db"))
    for rater in raters[:2]:
        while (pair := store.next_pair(rater["token"])) is not None:
            choice = "left" if pair["left"] < pair["right"] else "right"  # the same for both raters: keys are random
            store.submit(rater["token"], pair["assignment"], f"{rater['name']}-{pair['assignment'][:10]}",
                         {"overall": "tie", "prompt": "tie", "aesthetics": choice})  # fmt: skip
    store.engine.dispose()
    assert main(results) == 0
    out = json.loads(capsys.readouterr().out)
    overall = out["comparisons"][0]["criteria"]["overall"]
    assert overall["n"] == 4 and overall["tie"]["rate"] == 1.0
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'preference-data' / 'mlflow.db'}")
    run = client.get_run(out["mlflow_run_id"])
    assert run.data.metrics["overall/ours_vs_baseline/tie"] == 1.0
    assert run.data.metrics["overall/ours_vs_baseline/n"] == 4.0
    assert run.data.metrics["progress/ratings"] == 8.0
    assert run.data.params["study.models"] == '["ours", "baseline"]'
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["preference_results.json"]


def test_the_start_lines_parse_and_fail_cleanly(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:  # fmt: skip
    first, with_config, postgres = _commands()[:3]
    assert "--db" in first and "--port" in first
    monkeypatch.chdir(REPO)
    assert main([*with_config, "ratings_per_pair=1"]) == 2  # parsed, the config read, then refused before serving
    err = capsys.readouterr().err
    assert "ratings_per_pair must be >= 2" in err and "Traceback" not in err
    assert main([*with_config, "prot=1"]) == 2
    assert "unknown key 'prot'" in capsys.readouterr().err
    monkeypatch.setenv("INFINITY_PREFERENCE_ADMIN_TOKEN", "a-long-enough-admin-token")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        assert main(postgres) == 2  # no driver installed: one line naming the extra
        assert "pip install 'infinity-preference[postgres]'" in capsys.readouterr().err
    # other bad inputs of the shell steps: one line, exit 2
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert (
        main(["create-study", "--db", db, "--name", "x", "--run", str(tmp_path / "a"), "--run", str(tmp_path / "b")])
        == 2
    )
    assert "eval run folder" in capsys.readouterr().err
    assert main(["invite", "--db", db, "--study", "7", "--rater", "ann"]) == 2
    assert "no study 7" in capsys.readouterr().err
    monkeypatch.setenv("INFINITY_PREFERENCE_ADMIN_TOKEN", "short")
    assert main(["serve", "--db", db]) == 2
    assert "at least 16 characters" in capsys.readouterr().err


def test_the_root_readme_lists_the_service() -> None:
    assert "| `services/preference` |" in ROOT_README and "(services/preference/README.md)" in ROOT_README
