"""infinity-run: one override syntax, the tracking-URI rule, complete-only checkpoints, the README example."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from infinity_run.checkpoint import CheckpointStore, checkpoint_problems, read_checkpoint
from infinity_run.config import ConfigError, load_config, to_dict
from infinity_run.tracking import resolve_tracking_uri


@dataclass(frozen=True, kw_only=True)
class Optim:
    lr: float = 1e-4
    steps: int = 10
    betas: tuple[float, float] = (0.9, 0.97)
    name: str = ""
    flag: bool = False
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Run:
    optim: Optim = field(default_factory=Optim)


@dataclass(frozen=True, kw_only=True)
class Where:
    out: Path = Path("o")


@dataclass(frozen=True, kw_only=True)
class Paths:
    where: Where = field(default_factory=Where)


def test_overrides_have_one_syntax_and_errors_name_the_override(tmp_path):
    c = load_config(Run, None, ["optim.lr=3", 'optim.name="a b"', "optim.flag=true", "optim.betas=[0.8, 0.9]",
                                "optim.extra.depth=4", "optim.extra.name=x"])  # fmt: skip
    assert c.optim.lr == 3.0 and isinstance(c.optim.lr, float) and c.optim.name == "a b" and c.optim.flag is True
    assert c.optim.betas == (0.8, 0.9) and c.optim.extra == {"depth": 4, "name": "x"}
    assert load_config(Run, None, ["optim.name=/tmp/x"]).optim.name == load_config(Run, None, ['optim.name="/tmp/x"']).optim.name
    assert load_config(Run, None, ["optim.name=2024"]).optim.name == "2024"
    for bad, message in [
        ("optim.steps=1.5", "override 'optim.steps=1.5': expected an integer"),
        ("optim.flag=maybe", "override 'optim.flag=maybe': expected true or false"),
        ("optim.lrr=1", "override 'optim.lrr=1': unknown key 'lrr' in optim; valid keys: ['betas'"),
        ("optimx.lr=1", "override 'optimx.lr=1': unknown key 'optimx' in the top level"),
        ("optim.lr", "override 'optim.lr' must look like section.key=value"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(Run, None, [bad])
    broken = tmp_path / "run.toml"
    broken.write_text("[optim\nlr = 1\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(broken))} is not valid TOML"):
        load_config(Run, broken)
    broken.write_text("[optim]\nlr = 'fast'\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(broken))} \[optim\]: lr: expected a number"):
        load_config(Run, broken)
    with pytest.raises(FileNotFoundError, match=r"config file .*missing\.toml not found"):
        load_config(Run, tmp_path / "missing.toml")
    good = tmp_path / "good.toml"
    good.write_text("[optim]\nlr = 1\n")
    for bad, message in [
        ("optim.name.deeper=1", "override 'optim.name.deeper=1': 'name' is not a table"),
        ("optim.lr=x", f"override 'optim.lr=x': expected a number, got 'x' (overriding {good})"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(Run, good, [bad])
    assert load_config(Paths, None, ["where.out=/tmp/x"]).where.out == Path("/tmp/x")
    assert to_dict(load_config(Paths, None, ['where.out="/tmp/x"'])) == {"where": {"out": "/tmp/x"}}


def test_tracking_uri_rule(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path / "run") == f"sqlite:///{(tmp_path / 'run').resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://mlflow:5000"
    assert resolve_tracking_uri("sqlite:////x.db", tmp_path) == "sqlite:////x.db"


def test_child_runs_and_fluent_block_keep_the_store_and_the_environment(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from infinity_run.tracking import MLflowTracker

    uri = f"sqlite:///{tmp_path / 'env' / 'mlflow.db'}"
    (tmp_path / "env").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    parent = MLflowTracker(experiment="nest", run_dir=tmp_path / "run", system_metrics=False)
    child = parent.child("metric/a", tags={"metric": "a"})
    with child.active() as fluent:
        assert fluent.active_run().info.run_id == child.run_id
        fluent.log_table({"x": [1, 2]}, artifact_file="a/table.json")
    child.log_metrics({"a": 0.5}, step=0)
    child.finish()
    parent.finish()
    assert os.environ["MLFLOW_TRACKING_URI"] == uri  # mlflow.set_tracking_uri rewrites it; put back
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(child.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id and run.data.metrics == {"a": 0.5}
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.user"]
    assert client.get_experiment_by_name("nest").tags["mlflow.experimentKind"] == "custom_model_development"
    # A sqlite store keeps its artifacts next to its file, not in ./mlruns of the working directory.
    assert (tmp_path / "env" / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()
    assert not (tmp_path / "run" / "mlflow.db").exists()


def test_checkpoints_count_only_when_complete(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    store = CheckpointStore(tmp_path, keep=2)
    for step in (1, 2, 3):
        store.save(step, model, optimizer, meta={"step": step}, rank_state={"x": torch.tensor(step)})
    assert [p.name for _, p in store.steps()] == ["step_0000002", "step_0000003"]  # keep 2
    fresh = torch.nn.Linear(4, 3)
    fresh_optim = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    manifest, rank_state = read_checkpoint(store.latest(), fresh, fresh_optim)
    assert manifest["meta"] == {"step": 3} and int(rank_state["x"]) == 3
    assert torch.equal(fresh.weight, model.weight)
    assert torch.equal(fresh_optim.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    shard = next(store.path(3).glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:10])
    assert any("the manifest says" in p for p in checkpoint_problems(store.path(3)))
    assert store.latest() == store.path(2)
    with pytest.raises(ValueError, match=r"does not fit the model; 1 missing keys: other; 1 shape differences: weight"):
        read_checkpoint(store.path(2), _odd())


def _odd() -> torch.nn.Module:
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.zeros(2, 2))
    module.bias = torch.nn.Parameter(torch.zeros(3))
    module.other = torch.nn.Parameter(torch.zeros(1))
    return module


def test_readme_example_runs():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec", dont_inherit=True), {"__name__": "readme_example"})


@pytest.mark.ray_cluster
def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path):
    """SIGKILL of a driver that started a local cluster with init_ray: the reaper ends every process of its session."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pytest.importorskip("ray")
    from infinity_run.reaper import session_processes

    driver = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom infinity_run.ray_train import init_ray\n"
         "ray = init_ray(num_cpus=1, include_dashboard=False)\n"
         "from ray._private import worker\nprint(worker._global_node.get_session_dir_path(), flush=True)\n"
         "time.sleep(600)\n"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        session = driver.stdout.readline().strip()
        assert session, "the driver did not start Ray"
        assert session_processes(session), "no Ray process found for the session"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.monotonic() + 60
        while session_processes(session) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert session_processes(session) == []
    finally:
        if driver.poll() is None:
            driver.kill()
