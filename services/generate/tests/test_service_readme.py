"""The README's commands: the one-command start serves the curl example; the other lines parse and fail cleanly."""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

import httpx
import pytest

SERVICE_DIR = Path(__file__).resolve().parents[1]
REPO = SERVICE_DIR.parents[1]
README = (SERVICE_DIR / "README.md").read_text()


def _commands(program: str) -> list[list[str]]:
    lines = re.findall(rf"^uv run ({program} [^\n]*)$", README, flags=re.M)
    return [shlex.split(line.split("#")[0]) for line in lines]


def test_one_command_start_serves_the_curl_example(demo_service: dict[str, object]) -> None:
    # demo_service runs the README's first command (plus a free port) in a child process; it must exit 0 on SIGTERM.
    assert demo_service["argv"] == ["infinity-service", "--config", "services/generate/configs/local.toml"]
    body = json.loads(re.search(r"-d '(\{.*?\})'", README).group(1))  # the curl example's body
    response = httpx.post(f"{demo_service['url']}/v1/images", json=body, timeout=120)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG") and response.headers["X-Model"] == "demo_model"
    # One JSON line per request in the access log.
    time.sleep(0.5)
    lines = Path(str(demo_service["log"])).read_text().splitlines()
    access = [json.loads(line) for line in lines if line.startswith("{") and '"request_id"' in line]
    assert any(entry["path"] == "/v1/images" and entry["status"] == 200 for entry in access)


def test_other_readme_commands_parse_and_fail_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    from infinity_service.cli import main

    commands = _commands("infinity-service")
    assert len(commands) == 4
    # A missing weights directory: one line on stderr, exit 2, nothing served.
    with_weights = next(c for c in commands if any(a.startswith("service.model_dir=") for a in c))
    assert main([*with_weights[1:]]) == 2
    err = capsys.readouterr().err
    assert "model directory checkpoints/my_pipeline not found" in err and "Traceback" not in err
    for ray_command in (c for c in commands if "--ray" in c):
        assert main([*ray_command[1:], "service.limits.max_count=0"]) == 2  # parsed, then rejected before starting Ray
        assert "limits.max_count must be >= 1" in capsys.readouterr().err


def test_serve_run_builder_from_the_readme() -> None:
    pytest.importorskip("ray.serve", reason="Ray Serve missing: uv sync (infinity-service[ray])")
    from infinity_service.ray_serve import app_builder

    (line,) = re.findall(r"^uv run serve run (infinity_service\.ray_serve:app_builder [^\n]*)$", README, flags=re.M)
    target, *pairs = shlex.split(line)
    assert target == "infinity_service.ray_serve:app_builder"
    args = dict(pair.split("=", 1) for pair in pairs)
    args["config"] = str(REPO / args["config"])
    application = app_builder(args)
    deployment = application._bound_deployment
    assert deployment.name == "infinity-service" and deployment.num_replicas == 2
    with pytest.raises(ValueError, match="unknown key"):
        app_builder({**args, "service.prot": "1"})
