"""The runner end to end on a tiny random bitwise-ar pipeline: generation with per-sample seeds, resume after an
injected fault, completeness and input errors, Ray workers, MLflow logging read back, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from infinity_eval.benchmarks import load_prompts, sample_seed
from infinity_eval.cli import main
from infinity_eval.runner import run_suite
from infinity_eval.suites import build_run_config
from PIL import Image

pytest.importorskip("bitwise_ar.pipeline", reason="the runner tests generate through bitwise-ar's InfinityPipeline")

SUITE_TOML = """
name = "tiny"
[[benchmarks]]
name = "shapes"
prompts = "shapes:6"
images_per_prompt = 1
expected_prompts = 6
metrics = ["shapes", {name = "clip", model_id = "tiny"}]
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from bitwise_ar.testing import build_tiny_pipeline
    from infinity_eval.testing import write_tiny_clip

    root = tmp_path_factory.mktemp("runner")
    build_tiny_pipeline(root / "pipe")
    write_tiny_clip(root / "clip")
    (root / "suite.toml").write_text(SUITE_TOML)
    paths = {"root": root, "pipe": root / "pipe", "clip": root / "clip", "suite": root / "suite.toml"}
    run_suite(_config(paths, root / "generated", bootstrap_samples=0))  # the one full generation of this module
    paths["images"] = root / "generated" / "shapes" / "images"
    return paths


def _copy_images(setup: dict[str, Path], out: Path) -> Path:
    target = out / "shapes" / "images"
    shutil.copytree(setup["images"], target)
    return target


def _config(setup: dict[str, Path], out: Path, **extra):
    """The tiny suite's run config; ``extra`` keys are [run] settings or whole sections (weights, tracking...)."""
    run = {"suite": str(setup["suite"]), "out": str(out), "chunk_size": 2, "progress": False, "bootstrap_samples": 200}
    if "score_only" not in extra:
        run["model"] = str(setup["pipe"])
    data = {"weights": {"clip": str(setup["clip"])}, "generation": {"image_size": [64, 64]}}
    for key, value in extra.items():
        (data if key in ("weights", "generation", "tracking") else run)[key] = value
    return build_run_config({**data, "run": run})


class Boom(RuntimeError):
    pass


def test_seeds_are_per_sample_and_stable() -> None:
    a = sample_seed("geneval", "00001", 2, 0)
    assert a == sample_seed("geneval", "00001", 2, 0) and 0 <= a < 2**63
    assert len({a, sample_seed("geneval", "00001", 3, 0), sample_seed("geneval", "00002", 2, 0),
                sample_seed("geneval", "00001", 2, 1), sample_seed("imagereward", "00001", 2, 0)}) == 5
    assert len(load_prompts("imagereward")) == 100 and len(load_prompts("geneval", limit=3)) == 3


def test_the_prompt_manifest_keeps_scalar_prompt_metadata(setup: dict[str, Path]) -> None:
    # readers of a run's images (e.g. infinity-preference's per-category results) take categories from here
    rows = [json.loads(line) for line in (setup["images"] / "prompts.jsonl").read_text().splitlines()]
    records = load_prompts("shapes:6")
    assert [(r["id"], r["prompt"], r["task"]) for r in rows] == [(p.prompt_id, p.prompt, p.metadata["task"]) for p in records]


def test_generate_resume_after_fault_and_score_only(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    _copy_images(setup, out)
    scored: list[int] = []

    def fail_after_first(chunk: int) -> None:
        scored.append(chunk)
        if len(scored) == 2:  # the shapes metric has 3 chunks of 2 images; die after storing the second
            raise Boom

    with pytest.raises(Boom):
        run_suite(_config(setup, out), on_chunk=fail_after_first)
    images = sorted((out / "shapes" / "images").rglob("*.png"))
    assert len(images) == 6
    stamps = {p: p.stat().st_mtime_ns for p in images}
    scored.clear()
    resumed = run_suite(_config(setup, out), on_chunk=scored.append)
    assert scored == [2, 0, 1, 2]  # shapes: only the missing chunk; clip: all three
    assert {p: p.stat().st_mtime_ns for p in images} == stamps  # no image regenerated
    assert resumed.complete and (out / "results.json").is_file()
    # Scoring the same images from scratch gives byte-identical metrics and rows.
    fresh = run_suite(_config(setup, tmp_path / "fresh", score_only=str(out / "shapes" / "images")))
    assert json.dumps(fresh.flat_metrics(), sort_keys=True) == json.dumps(resumed.flat_metrics(), sort_keys=True)
    assert [r.rows for r in fresh.results] == [r.rows for r in resumed.results]
    cos = resumed.flat_metrics()["clip/tiny/cos_mean"]
    assert resumed.flat_metrics()["clip/ci95_low"] <= cos <= resumed.flat_metrics()["clip/ci95_high"]
    # Each image depends only on its own seed: regenerating one slot alone reproduces it bit for bit.
    first = images[0]
    original = np.asarray(Image.open(first))
    first.unlink()
    run_suite(_config(setup, out))
    assert np.array_equal(np.asarray(Image.open(first)), original)


def test_bad_inputs_fail_clearly(setup: dict[str, Path], tmp_path: Path) -> None:
    images = _copy_images(setup, tmp_path / "run")
    victim = next(images.rglob("0000.png"))
    data = victim.read_bytes()
    victim.unlink()
    with pytest.raises(ValueError, match=r"1 of 6 images missing"):
        run_suite(_config(setup, tmp_path / "s1", score_only=str(images)))
    partial = run_suite(_config(setup, tmp_path / "s2", score_only=str(images), allow_incomplete=True, bootstrap_samples=0))
    assert not partial.complete and partial.results[0].num_images == 5
    victim.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read image"):
        run_suite(_config(setup, tmp_path / "s3", score_only=str(images)))
    Image.new("RGB", (32, 48)).save(victim)
    with pytest.raises(ValueError, match="not 64x64"):
        run_suite(_config(setup, tmp_path / "s4", score_only=str(images)))
    victim.write_bytes(data)
    manifest = images / "prompts.jsonl"
    lines = manifest.read_text().splitlines()
    lines[0] = json.dumps({"id": "00000", "prompt": "three purple stars"})
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="prompts file mismatch"):
        run_suite(_config(setup, tmp_path / "s5", score_only=str(images)))
    with pytest.raises(FileNotFoundError, match=r"weights for metric 'clip' missing: .*clip-vit-large-patch14"):
        run_suite(_config(setup, tmp_path / "s6", weights={"root": str(tmp_path / "no_weights")}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"geneval: 2212 of 2212 images missing"):
        run_suite(build_run_config({"run": {"suite": "geneval", "out": str(tmp_path / "g"),
                                               "score_only": str(tmp_path / "empty")}}))
    with pytest.raises(ValueError, match="exactly one of --model"):
        build_run_config({"run": {"suite": "geneval", "out": str(tmp_path)}})


@pytest.mark.ray_cluster
def test_ray_workers_match_in_process(setup: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="needs the ray extra")
    import ray

    images = str(setup["images"])
    # The shapes scorer keeps worker start-up light (no transformers import per actor).
    suite = setup["root"] / "shapes_only.toml"
    suite.write_text(SUITE_TOML.replace(', {name = "clip", model_id = "tiny"}', ""))
    local = run_suite(_config(setup, tmp_path / "local", suite=str(suite), score_only=images, bootstrap_samples=0))
    try:
        for workers in (1, 2):
            dist = run_suite(_config(setup, tmp_path / f"w{workers}", suite=str(suite), score_only=images, workers=workers,
                                     bootstrap_samples=0))
            assert [r.rows for r in dist.results] == [r.rows for r in local.results]
            assert dist.flat_metrics() == local.flat_metrics()
    finally:
        ray.shutdown()


def test_mlflow_logging_read_back(setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason="needs the mlflow extra")
    import mlflow

    # No URI in the config: $MLFLOW_TRACKING_URI is the store (infinity_run.tracking's rule).
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("INFINITY_SYSTEM_METRICS_INTERVAL", "1000")
    _copy_images(setup, tmp_path / "run")  # generation resumes: nothing left to generate
    result = run_suite(_config(setup, tmp_path / "run", tracking={"kind": "mlflow", "experiment": "eval-test"}))
    assert not (tmp_path / "run" / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri=uri)
    parent = client.get_run(result.params["mlflow_run_id"])
    assert parent.data.tags["suite"] == "tiny" and parent.data.tags["complete"] == "true"
    assert parent.data.tags["mlflow.user"] and parent.info.status == "FINISHED"
    # The parent carries each metric's headline and its bootstrap CI, for comparing runs side by side.
    headlines = {f"{r.benchmark}/{r.metric}": r for r in result.results}
    assert set(headlines) == {"shapes/shapes", "shapes/clip"}
    for key, metric in headlines.items():
        low, high = parent.data.metrics[f"{key}/ci95_low"], parent.data.metrics[f"{key}/ci95_high"]
        assert parent.data.metrics[key] == pytest.approx(metric.headline) and (low, high) == pytest.approx(metric.ci95)
        assert low <= parent.data.metrics[key] <= high and parent.data.metrics[f"{key}/num_images"] == 6
    assert parent.data.params["seed_policy"].startswith("sha256") and "weights/clip" in parent.data.params
    assert parent.data.params["model/adapter"] == "bitwise_ar.InfinityPipeline"
    exp = client.get_experiment_by_name("eval-test")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_name = {c.data.tags["metric"]: c for c in children}
    assert set(by_name) == {"shapes", "clip"}
    clip_run = by_name["clip"]
    assert clip_run.data.metrics["clip/tiny/cos_mean"] == pytest.approx(result.flat_metrics()["clip/tiny/cos_mean"])
    assert "clip/ci95_low" in clip_run.data.metrics and clip_run.data.metrics["clip/num_images"] == 6
    table = client.load_table(exp.experiment_id, "clip/per_image.json", run_ids=[clip_run.info.run_id],
                             extra_columns=["run_id"])
    # (pandas reads the zero-padded ids back as numbers)
    assert len(table) == 6 and {f"{int(i):05d}" for i in table["prompt_id"]} == {f"{i:05d}" for i in range(6)}
    assert isinstance(table["image"].iloc[0], dict)  # mlflow.Image cells come back as references
    artifacts = [a.path for a in client.list_artifacts(clip_run.info.run_id, "images")]
    assert artifacts, "image grid missing"
    assert clip_run.inputs.dataset_inputs[0].dataset.name == "shapes-prompts"
    # Metrics are linked to a LoggedModel of the evaluated pipeline and to the prompt-set dataset.
    (logged,) = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
    assert logged.name == "pipe" and "weights/clip" in logged.params
    linked = {m.key: m for m in logged.metrics or []}
    assert linked["clip/tiny/cos_mean"].value == pytest.approx(clip_run.data.metrics["clip/tiny/cos_mean"])
    assert linked["clip/tiny/cos_mean"].dataset_name == "shapes-prompts" and linked["clip/tiny/cos_mean"].dataset_digest


def test_cli_run_and_weights(setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    _copy_images(setup, out)
    code = main(["run", "--suite", str(setup["suite"]), "--model", str(setup["pipe"]), "--out", str(out),
                 "--set", f"weights.clip={setup['clip']}", "--set", "generation.image_size=[64, 64]",
                 "--set", "run.progress=false", "--set", "run.bootstrap_samples=0"])
    assert code == 0
    assert "clip/tiny/cos_mean" in capsys.readouterr().out
    assert main(["run", "--suite", "nope", "--model", str(setup["pipe"]), "--out", str(out)]) == 2
    assert "unknown suite 'nope'" in capsys.readouterr().err
    weights_root = tmp_path / "weights"
    shutil.copytree(setup["clip"], weights_root / "clip-vit-large-patch14")
    assert main(["weights", "--root", str(weights_root), "--metric", "clip", "--pin"]) == 0
    assert "unpinned" in capsys.readouterr().out
    assert main(["weights", "--root", str(weights_root), "--metric", "clip", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "ok"
    (weights_root / "clip-vit-large-patch14" / "config.json").write_text("{}")
    assert main(["weights", "--root", str(weights_root), "--metric", "clip"]) == 1
    assert "mismatch" in capsys.readouterr().out


def test_score_only_hps_and_imagereward_layouts(tmp_path: Path) -> None:
    """Model-based metrics through the runner: HPSv2 folders in hpsv2's own layout (<style>/<idx>.jpg), ImageReward."""
    import dataclasses

    from infinity_eval.hps import HPS_STYLES
    from infinity_eval.testing import write_tiny_hps, write_tiny_imagereward

    ckpt, tok, arch = write_tiny_hps(tmp_path / "hps")
    ir_dir, vit = write_tiny_imagereward(tmp_path / "ir")
    prompts = tmp_path / "hpdv2"
    prompts.mkdir()
    rng = np.random.default_rng(3)
    for style in HPS_STYLES:
        (prompts / f"{style}.json").write_text(json.dumps([f"a {style} photo of a red dog", "blue cat"]))
        for i in range(2):
            (tmp_path / "images" / style).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "images" / style / f"{i:05d}.jpg")
    arch_toml = ", ".join(f"{f.name} = {getattr(arch, f.name)!r}" for f in dataclasses.fields(arch)).replace("'", '"')
    vit_toml = ", ".join(f"{f.name} = {getattr(vit, f.name)!r}" for f in dataclasses.fields(vit))
    suite = tmp_path / "suite.toml"
    suite.write_text(f"""
name = "prefs"
[[benchmarks]]
name = "hpsv21"
prompts = "hpsv21:{prompts}"
images_per_prompt = 1
layout = "hps"
expected_prompts = 8
metrics = [{{ name = "hpsv21", arch = {{ {arch_toml} }} }}, {{ name = "imagereward", vit = {{ {vit_toml} }} }}]
""")
    cfg = build_run_config({"run": {"suite": str(suite), "out": str(tmp_path / "out"),
                                    "score_only": str(tmp_path / "images"), "progress": False, "bootstrap_samples": 50},
                            "weights": {"hps_checkpoint": str(ckpt), "hps_tokenizer": str(tok), "imagereward": str(ir_dir)}})
    result = run_suite(cfg)
    metrics = result.flat_metrics()
    assert {f"hpsv21/{s}" for s in HPS_STYLES} | {"hpsv21/average", "imagereward/mean"} <= set(metrics)
    hps_rows = result.results[0].rows
    assert len(hps_rows) == 8 and {r["style"] for r in hps_rows} == set(HPS_STYLES)
    assert metrics["hpsv21/average"] == pytest.approx(np.mean([r["hps"] for r in hps_rows]))
