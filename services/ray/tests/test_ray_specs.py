"""The cluster definitions and job specs are valid, consistent, and their validators catch real mistakes."""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from infinity_ray import (
    kuberay_problems,
    launcher_problems,
    load_job_spec,
    load_yaml_documents,
    manifest_dir,
    rayjob_manifest,
    spec_dir,
    submit_command,
)
from infinity_ray.cli import all_problems

ROOT = manifest_dir()
LAUNCHERS = sorted((ROOT / "cluster").glob("*.yaml"))
KUBERAY = sorted((ROOT / "kuberay").glob("*.yaml"))
SPECS = sorted(spec_dir().glob("*.yaml"))


def test_expected_files_exist() -> None:
    assert [p.name for p in LAUNCHERS] == ["launcher-aws.yaml"]
    assert {p.stem for p in SPECS} >= {"train", "curate", "eval", "smoke"}
    assert {p.name for p in KUBERAY} >= {
        "raycluster.yaml",
        "rayjob-train.yaml",
        "rayjob-curate.yaml",
        "rayjob-eval.yaml",
    }


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.stem)
def test_launcher_config_valid(path: Path) -> None:
    (config,) = load_yaml_documents(path)
    assert launcher_problems(config) == []


def test_launcher_validator_catches_mistakes() -> None:
    (config,) = load_yaml_documents(LAUNCHERS[0])
    broken = copy.deepcopy(config)
    broken["head_node_type"] = "missing"
    broken["provider"]["typo_field"] = 1
    broken["available_node_types"]["gpu_worker"]["max_workers"] = 99
    broken["setup_commands"] = ["pip install ray"]
    problems = "\n".join(launcher_problems(broken))
    assert "head_node_type 'missing'" in problems
    assert "max_workers 99" in problems
    assert "uv sync --locked" in problems
    broken2 = copy.deepcopy(config)
    broken2["max_workers"] = "many"
    assert any(p.startswith("schema:") for p in launcher_problems(broken2))


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.stem)
def test_kuberay_manifest_valid(path: Path) -> None:
    docs = load_yaml_documents(path)
    assert docs
    for doc in docs:
        assert kuberay_problems(doc) == []


def test_kuberay_validator_catches_mistakes() -> None:
    (cluster,) = load_yaml_documents(ROOT / "kuberay" / "raycluster.yaml")
    broken = copy.deepcopy(cluster)
    broken["metadata"]["name"] = "Infinity_Cluster"
    broken["spec"]["workerGroupSpecs"][0]["replicas"] = 50
    del broken["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    problems = "\n".join(kuberay_problems(broken))
    assert "DNS-1123" in problems
    assert "minReplicas <= replicas <= maxReplicas" in problems
    assert "name and an image" in problems
    job = rayjob_manifest(load_job_spec(spec_dir() / "train.yaml"))
    job["spec"]["rayClusterSpec"] = cluster["spec"]  # both a selector and an inline cluster
    assert any("exactly one" in p for p in kuberay_problems(job))


def test_raycluster_matches_locked_ray_version() -> None:
    import ray

    (cluster,) = load_yaml_documents(ROOT / "kuberay" / "raycluster.yaml")
    assert cluster["spec"]["rayVersion"] == ray.__version__, "bump rayVersion (and the image) with the lock file"


@pytest.mark.parametrize("name", ["train", "curate", "eval"])
def test_committed_rayjob_is_the_rendered_job_spec(name: str) -> None:
    (committed,) = load_yaml_documents(ROOT / "kuberay" / f"rayjob-{name}.yaml")
    spec = load_job_spec(spec_dir() / f"{name}.yaml")
    assert committed == rayjob_manifest(spec), f"regenerate with `infinity-ray rayjob services/ray/jobs/{name}.yaml`"
    env = yaml.safe_load(committed["spec"]["runtimeEnvYAML"])
    assert env["env_vars"] == spec.runtime_env["env_vars"]


def test_job_spec_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nentrypoint: python -m json.tool\nentrypoint_cpus: 1\n")
    with pytest.raises(ValueError, match=r"unknown keys \['entrypoint_cpus'\]; valid keys: .*entrypoint_num_cpus"):
        load_job_spec(bad)
    bad.write_text("name: x\nentrypoint: python -m json.tool\nruntime_env: {env_vars: {OMP_NUM_THREADS: 1}}\n")
    with pytest.raises(ValueError, match="quote numbers"):
        load_job_spec(bad)
    with pytest.raises(FileNotFoundError, match="shipped specs are in"):
        load_job_spec(tmp_path / "nope.yaml")
    bad.write_text("name: x\nentrypoint: not-a-command --config configs/nope.toml\n")
    from infinity_ray import entrypoint_problems

    problems = "\n".join(entrypoint_problems(load_job_spec(bad)))
    assert "'not-a-command' is not a console script" in problems
    assert "configs/nope.toml' does not exist" in problems


def test_submit_command_carries_runtime_env_and_resources() -> None:
    spec = load_job_spec(spec_dir() / "train.yaml")
    cmd = submit_command(spec, "http://127.0.0.1:8265", submission_id="train-1")
    assert cmd[:5] == ["ray", "job", "submit", "--address", "http://127.0.0.1:8265"]
    env = json.loads(cmd[cmd.index("--runtime-env-json") + 1])
    assert Path(env["working_dir"]) == ROOT.parents[1]  # the repository root
    assert ".venv" in env["excludes"]
    assert cmd[cmd.index("--") + 1 :] == shlex.split(spec.entrypoint)
    assert json.loads(cmd[cmd.index("--metadata-json") + 1]) == {"workload": "train"}
    overridden = submit_command(
        spec, "http://h:8265", overrides=["run.out_dir=/shared/x"], environ={"MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    )
    assert overridden[-1] == "run.out_dir=/shared/x" and "--ray" in overridden
    env = json.loads(overridden[overridden.index("--runtime-env-json") + 1])
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    with pytest.raises(ValueError, match=r"must look like section\.key=value"):
        submit_command(spec, "http://h:8265", overrides=["--oops"])


def test_readme_commands_validate_and_render() -> None:
    readme = (ROOT / "README.md").read_text()
    lines = [line.split("#")[0].strip() for line in readme.splitlines() if line.startswith("uv run infinity-ray ")]
    assert any(" validate" in line for line in lines) and any(" rayjob " in line for line in lines)
    script = str(Path(sys.executable).parent / "infinity-ray")
    repo = ROOT.parents[1]
    for line in lines:
        argv = shlex.split(line)[2:]
        if argv[1] == "submit" and "--dry-run" not in argv:
            continue  # needs a cluster: test_ray_local.py runs it against a local head
        proc = subprocess.run([script, *argv[1:]], capture_output=True, text=True, cwd=repo, timeout=120)
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-2000:]}"
        if argv[1] == "rayjob":
            assert yaml.safe_load(proc.stdout)["kind"] == "RayJob"
        if "--dry-run" in argv:
            assert shlex.split(proc.stdout)[:3] == ["ray", "job", "submit"]


def test_every_job_entrypoint_exists_in_this_repo() -> None:
    assert all_problems() == []
