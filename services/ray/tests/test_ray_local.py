"""A real local head node: `infinity-ray submit` (i.e. `ray job submit`) runs the smoke job and a small training job
from this repo to success."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from infinity_ray import manifest_dir, spec_dir
from infinity_ray.local import LocalRayHead

pytestmark = pytest.mark.slow


def _api(head: LocalRayHead, path: str, body: dict[str, object] | None = None, *, token: bool = True) -> dict:
    """The job server's REST API (what `ray job` and JobSubmissionClient wrap) over plain HTTP with the head's
    token: Ray's in-process client caches its auth settings at first use, which other tests in this process may
    already have fixed (e.g. a local ray.init without token auth)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + Path(head.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{head.dashboard_url}{path}", data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.ray_cluster
@pytest.mark.timeout(300)
def test_local_head_runs_submitted_job(tmp_path: Path) -> None:
    readme = (manifest_dir() / "README.md").read_text()
    assert "uv run infinity-ray submit services/ray/jobs/smoke.yaml --address" in readme
    script = str(Path(sys.executable).parent / "infinity-ray")
    results = tmp_path / "shared"
    with LocalRayHead(num_cpus=2) as head:
        job_dirs = head.temp_dir
        # A failing job, submitted first so that it runs alongside the real one.
        _api(head, "/api/jobs/", {"entrypoint": "python -m infinity_ray.smoke --num-samples 0",
                                  "submission_id": "smoke-bad", "entrypoint_num_cpus": 0})  # fmt: skip
        proc = subprocess.run(
            [script, "submit", str(spec_dir() / "smoke.yaml"), "--address", head.dashboard_url,
             "--submission-id", "smoke-test-1"],
            env=head.env, capture_output=True, text=True, timeout=240, cwd=manifest_dir().parents[1],
        )  # fmt: skip
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-4000:]
        match = re.search(r"SMOKE_RESULT (\{.*\})", output)
        assert match, output[-4000:]
        result = json.loads(match.group(1))
        assert result["num_samples"] == result["num_correct"] == 8
        assert result["nodes"] == 1

        # The training job spec: real Ray Train (debug preset, 1 worker) tracked in MLflow, shipped with the repo as
        # its working_dir runtime env, exactly as it would be submitted to a cluster. Results go where the overrides
        # say: they must outlive the job's temporary working dir.
        refused = subprocess.run(
            [script, "submit", str(spec_dir() / "train.yaml"), "--address", head.dashboard_url,
             "--submission-id", "train-refused", "train.steps=2"],
            env=head.env, capture_output=True, text=True, timeout=240, cwd=manifest_dir().parents[1],
        )  # fmt: skip
        assert refused.returncode != 0
        assert "lies in this Ray job's temporary working directory" in refused.stdout + refused.stderr
        train = subprocess.run(
            [script, "submit", str(spec_dir() / "train.yaml"), "--address", head.dashboard_url,
             "--submission-id", "train-test-1", f"run.out_dir={results / 'run'}",
             f"tracking.tracking_uri=sqlite:///{results / 'mlflow.db'}", "train.steps=4", "run.checkpoint_every=2"],
            env=head.env, capture_output=True, text=True, timeout=300, cwd=manifest_dir().parents[1],
        )  # fmt: skip
        train_output = train.stdout + train.stderr
        assert train.returncode == 0, train_output[-4000:]
        assert "finished at step 4" in train_output, train_output[-4000:]
        assert _api(head, "/api/jobs/train-test-1")["status"] == "SUCCEEDED"

        info = _api(head, "/api/jobs/smoke-test-1")
        assert info["status"] == "SUCCEEDED"
        assert info["metadata"] == {"workload": "smoke"}
        with pytest.raises(urllib.error.HTTPError) as denied:
            _api(head, "/api/jobs/smoke-test-1", token=False)
        assert denied.value.code in (401, 403)
        # The failing job is reported as failed (so `ray job submit` and `infinity-ray submit` exit non-zero).
        deadline = time.monotonic() + 120
        while (bad := _api(head, "/api/jobs/smoke-bad"))["status"] in ("PENDING", "RUNNING"):
            assert time.monotonic() < deadline, bad
            time.sleep(0.5)
        assert bad["status"] == "FAILED", bad
        assert "--num-samples must be >= 1" in json.dumps(bad) or bad.get("driver_exit_code") == 2, bad
    assert head.leftover_pids() == []

    # The head, its session and the jobs' working dirs are gone; the training job's results are not.
    assert not job_dirs.exists()
    from bitwise_ar.model import InfinityTransformer
    from infinity_run.checkpoint import read_manifest

    checkpoints = sorted((results / "run" / "ray").glob("*/step_*"))
    assert [p.name for p in checkpoints] == ["step_0000002", "step_0000004"]
    assert read_manifest(checkpoints[-1])["step"] == 4
    InfinityTransformer.from_pretrained(results / "run" / "final_model" / "transformer")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    run = client.get_run((results / "run" / "mlflow_run_id").read_text().strip())
    assert run.info.status == "FINISHED" and run.data.params["train.steps"] == "4"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [4]
