"""``python -m bsq_tokenizer.train``: TOML + overrides, sharded checkpoints and exact resume, 2 Ray Train workers with
the losses and weights of one process, MLflow steps once each, export, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bsq_tokenizer import BSQTokenizer
from bsq_tokenizer.train.config import load_run_config
from bsq_tokenizer.train.ray_entry import build_trainer
from infinity_run.checkpoint import read_manifest

REPO = Path(__file__).resolve().parents[3]
TINY = ["model.overrides.base_channels=8", "model.overrides.channel_multipliers=[1, 2, 2]",
        "model.overrides.codebook_dim=8", "model.overrides.patch_size=4", "model.overrides.norm_groups=4"]  # fmt: skip


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Eight smooth random colour images of different sizes (PNG)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(8):
        h, w = 40 + 4 * i, 56 - 2 * i
        base = rng.uniform(0, 255, (4, 4, 3))
        image = Image.fromarray(base.astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)
        image.save(root / f"{i:02d}.png")
    return root


def _config(photos: Path, out_dir: Path, *extra: str):
    return load_run_config(
        REPO / "configs/train/tokenizer_debug.toml",
        [f"data.source={photos}", f"run.out_dir={out_dir}", "data.image_size=32", "train.steps=6", "train.lr=3e-3",
         "run.log_every=1", "run.checkpoint_every=3", "train.scale_drop_prob=0.5", *TINY, *extra],
    )  # fmt: skip


def test_resume_from_a_sharded_checkpoint_equals_an_uninterrupted_run(photos, tmp_path):
    whole = build_trainer(_config(photos, tmp_path / "whole"))
    whole.fit()
    first = build_trainer(_config(photos, tmp_path / "split", "train.steps=3"))
    first.fit()
    manifest = read_manifest(tmp_path / "split" / "checkpoints" / "step_0000003")
    assert manifest["meta"]["data"]["batch"] == 3 and manifest["has_optimizer"]
    resumed = build_trainer(_config(photos, tmp_path / "split"))
    assert resumed.step == 3 and resumed.source.batch == 3
    resumed.fit()
    a = BSQTokenizer.from_pretrained(tmp_path / "whole" / "tokenizer").state_dict()
    b = BSQTokenizer.from_pretrained(tmp_path / "split" / "tokenizer").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(not torch.equal(a[k], BSQTokenizer(whole.config.model).state_dict()[k]) for k in a)


def test_cli_errors_are_one_line(photos, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bsq_tokenizer.train", *args], capture_output=True, text=True,
                              timeout=120, cwd=REPO)  # fmt: skip

    config = str(REPO / "configs/train/tokenizer_debug.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\nsteps = 1\n")
    cases = [
        ((str(tmp_path / "missing.toml"),), "missing.toml not found"),
        ((str(broken),), "broken.toml is not valid TOML"),
        ((config, "train.stepz=3"), "unknown key 'stepz' in train"),
        ((config, "train.steps=many"), "expected an integer"),
        ((config, f"data.source={tmp_path / 'nowhere'}"), "nowhere not found"),
        ((config, f"data.source={tmp_path}"), "holds no images"),
        ((config, f"data.source={photos}", "data.batch_size=3", "ray.num_workers=2", "--ray"),
         "cannot be split over 2 workers"),
    ]  # fmt: skip
    for args, message in cases:
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr


ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")


@pytest.mark.ray_cluster
@pytest.mark.slow
def test_two_ray_workers_train_the_same_tokenizer_as_one_process(photos, tmp_path):
    """One process (the CLI's in-process path) and 2 Ray Train workers (DDP) on the same global batch: the same
    losses and weights, each step logged once. (1-worker Ray Train runs are in the AR LoRA test and the local-head
    job, on the same infinity_run.ray_train path.)"""
    from bsq_tokenizer.train.ray_entry import run_ray
    from infinity_run.ray_train import init_ray
    from infinity_run.tracking import tracker_for

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracked = ["tracking.kind=mlflow", f"tracking.tracking_uri={uri}", "run.image_every=3"]
    config = _config(photos, tmp_path / "w1", *tracked)
    tracker = tracker_for(config.tracking, config.run.out_dir)
    build_trainer(config, tracker=tracker).fit()
    tracker.finish()
    init_ray(num_cpus=2, include_dashboard=False)
    try:
        ray_result = run_ray(_config(photos, tmp_path / "w2", "ray.num_workers=2", *tracked))
    finally:
        ray.shutdown()
    client = mlflow.MlflowClient(tracking_uri=uri)
    losses = {}
    for n, run_id in ((1, tracker.run_id), (2, ray_result["mlflow_run_id"])):
        history = sorted(client.get_metric_history(run_id, "loss/l1"), key=lambda m: m.step)
        assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]
        losses[n] = torch.tensor([m.value for m in history])
        assert client.get_metric_history(run_id, "reconstruction") or client.list_artifacts(run_id, "images")
    assert read_manifest(ray_result["checkpoint"])["world_size"] == 2
    assert ray_result["model_dir"] == tmp_path / "w2" / "tokenizer"
    assert client.list_artifacts(ray_result["mlflow_run_id"], "model")
    assert losses[1][-1] < losses[1][0]
    assert torch.allclose(losses[2], losses[1], rtol=1e-4), (losses[1], losses[2])
    one = BSQTokenizer.from_pretrained(tmp_path / "w1" / "tokenizer").state_dict()
    two = BSQTokenizer.from_pretrained(ray_result["model_dir"]).state_dict()
    # Different worker and thread counts sum in different orders; AdamW turns that float32 noise on near-zero
    # gradients into weight differences of ~1e-5 (1.5e-5 measured, one process on 2 threads), while a wrong batch or
    # optimiser state moves weights by ~lr = 3e-3 per step.
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    assert all(torch.allclose(one[k], two[k], rtol=1e-4, atol=5e-5) for k in one), worst
