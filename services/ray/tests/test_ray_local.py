"""A real local head node: `infinity-ray submit` (i.e. `ray job submit`) runs a small job from this repo to success."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from infinity_ray import manifest_dir, spec_dir
from infinity_ray.local import LocalRayHead

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_local_head_runs_submitted_job() -> None:
    readme = (manifest_dir() / "README.md").read_text()
    assert "uv run infinity-ray submit services/ray/jobs/smoke.yaml --address" in readme
    script = str(Path(sys.executable).parent / "infinity-ray")
    with LocalRayHead(num_cpus=1) as head:
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

        # The job server's REST API (what JobSubmissionClient wraps) agrees. Plain HTTP with the head's token:
        # Ray's in-process client caches its auth settings at first use, which other tests in this process may
        # already have fixed (e.g. a local ray.init without token auth).
        token = Path(head.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        request = urllib.request.Request(
            f"{head.dashboard_url}/api/jobs/smoke-test-1", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            info = json.loads(response.read())
        assert info["status"] == "SUCCEEDED"
        assert info["metadata"] == {"workload": "smoke"}
        anonymous = urllib.request.Request(f"{head.dashboard_url}/api/jobs/smoke-test-1")
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(anonymous, timeout=30)
        assert denied.value.code in (401, 403)
        # A failing job makes `ray job submit` (and so `infinity-ray submit`) exit non-zero.
        bad = subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", head.dashboard_url,
             "--entrypoint-num-cpus", "0", "--", "python", "-m", "infinity_ray.smoke", "--num-samples", "0"],
            env=head.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert bad.returncode != 0
    assert head.leftover_pids() == []
