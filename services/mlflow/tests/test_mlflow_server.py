"""The tracking server starts with the README's one command, accepts a short bitwise-ar training run, and serves it back."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from infinity_mlflow_server import ServerConfig, build_command, free_port

README = Path(__file__).resolve().parents[1] / "README.md"

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "train" / "debug.toml"

TRAIN_SCRIPT = textwrap.dedent(
    """
    # A short real training run of the bitwise AR transformer (debug preset, 3 steps) logged through
    # MLFLOW_TRACKING_URI. Started together with the server (the imports take as long as the server's start-up),
    # it waits for /health first.
    import os, sys, time, urllib.request
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(os.environ["MLFLOW_TRACKING_URI"] + "/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit("tracking server not ready in 180 s")
        time.sleep(0.3)
    from bitwise_ar.train.__main__ import main
    sys.exit(main(sys.argv[1:]))
    """
)
TRAIN_ARGS = [
    "run.out_dir=run", "train.steps=3", "run.log_every=1", "run.checkpoint_every=3", "data.image_size=32",
    "data.batch_size=2", "tracking.kind=mlflow", "tracking.experiment=services-mlflow-test",
]  # fmt: skip


def _readme_command() -> list[str]:
    text = README.read_text()
    match = re.search(r"^uv run (infinity-mlflow-server[^\n]*)$", text, flags=re.M)
    assert match, "README must show the one-command start `uv run infinity-mlflow-server ...`"
    argv = shlex.split(match.group(1))
    script = Path(sys.executable).parent / argv[0]  # the console script `uv run` would execute
    assert script.exists(), f"console script {script} missing; run `uv sync`"
    return [str(script), *argv[1:]]


def test_config_validation_messages() -> None:
    with pytest.raises(ValueError, match=r"port must be in 1\.\.65535"):
        ServerConfig(port=70000)
    with pytest.raises(ValueError, match="SQLAlchemy URI"):
        ServerConfig(backend_store_uri="mlflow.db")
    with pytest.raises(ValueError, match="workers"):
        ServerConfig(workers=0)


def test_default_command_is_loopback_sqlite_and_local_artifacts(tmp_path: Path) -> None:
    config = ServerConfig(port=5123, root=tmp_path)
    cmd = build_command(config)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert cmd[cmd.index("--artifacts-destination") + 1] == str(tmp_path.resolve() / "artifacts")
    assert "--serve-artifacts" in cmd
    assert config.url == "http://127.0.0.1:5123"


def test_cli_bad_port_fails_cleanly() -> None:
    proc = subprocess.run([*_readme_command(), "--port", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "port must be in 1..65535" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(240)
def test_server_logs_training_run_and_reads_it_back(tmp_path: Path) -> None:
    port = free_port()
    root = tmp_path / "mlflow-data"
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [*_readme_command(), "--port", str(port), "--root", str(root)], stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": url}
    trainer = subprocess.Popen(
        [sys.executable, "-c", TRAIN_SCRIPT, str(CONFIG), *TRAIN_ARGS], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server not ready in 180 s"
            time.sleep(0.5)

        stdout, stderr = trainer.communicate(timeout=180)
        assert trainer.returncode == 0, stderr[-3000:]
        assert "finished at step 3" in stdout, stdout[-3000:]

        import mlflow
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=url)
        experiment = client.get_experiment_by_name("services-mlflow-test")
        assert experiment is not None
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED"
        assert run.data.params["train.steps"] == "3" and run.data.params["model.preset"] == "debug"
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == [1, 2, 3]
        assert all(m.value > 0 for m in history)
        # Artifacts (the run's config file) went through the server's proxy into the local artifact root.
        downloaded = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="config/debug.toml", dst_path=str(tmp_path / "dl"), tracking_uri=url
        )
        assert Path(downloaded).read_text() == CONFIG.read_text()
        assert list((root / "artifacts").rglob("debug.toml")), "artifact not stored under <root>/artifacts"
        assert (root / "mlflow.db").is_file()
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait(timeout=30)
        server.send_signal(signal.SIGTERM)
        try:
            rc = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            rc = server.wait(timeout=30)
        log.close()
    assert rc in (0, -signal.SIGTERM), (tmp_path / "server.log").read_text()[-3000:]
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=2)
