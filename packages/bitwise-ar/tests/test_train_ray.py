"""Ray Train + MLflow: 2 workers (DDP on CPU), a worker killed mid-run, metrics and images read back from MLflow."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")


@pytest.mark.slow
def test_two_worker_ray_run_survives_a_killed_worker_and_logs_to_mlflow(tmp_path):
    import ray
    from bitwise_ar.train.checkpoint import latest_checkpoint, load_checkpoint
    from bitwise_ar.train.config import load_config
    from bitwise_ar.train.ray_entry import run_ray

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = load_config(
        None,
        [
            f"run.out_dir={tmp_path / 'run'}",
            "data.batch_size=2",
            "data.image_size=32",
            "train.steps=4",
            "run.log_every=1",
            "run.checkpoint_every=1",
            "run.image_every=2",
            "ray.num_workers=2",
            "ray.max_failures=1",
            "tracking.kind=mlflow",
            "tracking.experiment=test-ray",
            f"tracking.tracking_uri={uri}",
        ],
    )
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        result = run_ray(config, kill_at_step=2)
    finally:
        ray.shutdown()
    assert (tmp_path / "run" / ".killed_once").exists()  # the worker really died once
    final = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert load_checkpoint(final)["step"] == 4
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "4" and run.data.params["ray.num_workers"] == "2"
    steps = sorted({m.step for m in client.get_metric_history(run.info.run_id, "train/loss")})
    assert steps == [1, 2, 3, 4]  # continuous across the restart, no step logged from 0 again
    assert client.get_metric_history(run.info.run_id, "scale/acc_bit_s00")
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any(p.endswith(".png") for p in images)
    model = [a.path for a in client.list_artifacts(run.info.run_id, "model")]
    assert "model/transformer" in model and "model/sampler.json" in model
