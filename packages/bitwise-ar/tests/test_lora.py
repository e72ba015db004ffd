"""LoRA fine-tuning (bitwise_ar.lora with peft): a frozen base, adapters saved apart, reloaded, merged, refused on
the wrong base; checkpoints, export and config errors. One tiny run shared by the module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bitwise_ar.cli import main as cli_main
from bitwise_ar.lora import (
    ADAPTER_WEIGHTS,
    adapter_parameters,
    add_lora,
    base_fingerprint,
    has_lora,
    load_adapter,
)
from bitwise_ar.model import InfinityTransformer
from bitwise_ar.pipeline import InfinityPipeline
from bitwise_ar.testing import build_tiny_pipeline, random_text, tiny_transformer
from bitwise_ar.train.config import load_config
from bitwise_ar.train.ray_entry import export_checkpoint
from bitwise_ar.train.trainer import ARTrainer
from infinity_run.checkpoint import CheckpointStore
from PIL import Image
from torch import nn

pytest.importorskip("peft")

SCHEDULE = [(1, 1), (2, 2), (4, 4)]
PROMPT = "two red circles to the left of a blue square"


def _overrides(base, out_dir, *extra: str) -> list[str]:
    return [
        f"run.out_dir={out_dir}", f"model.init_from={base}", f"model.tokenizer={base / 'tokenizer'}",
        f"model.text_encoder={base / 'text_encoder'}", "data.source=synthetic", "data.batch_size=2", "data.image_size=32",
        "train.steps=3",
        "optim.lr=3e-2", "run.checkpoint_every=2", "lora.rank=4", "lora.alpha=8", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 3-step LoRA run (rank 4) on a tiny random pipeline, and that base."""
    root = tmp_path_factory.mktemp("lora")
    base = build_tiny_pipeline(root / "base", seed=0)
    trainer = ARTrainer(load_config(None, _overrides(base, root / "run")))
    trainer.fit()
    return {"root": root, "base": base, "trainer": trainer, "adapter": root / "run" / "lora"}


def _logits(model: nn.Module) -> torch.Tensor:
    d = model.config.codebook_dim
    inputs = torch.randn(2, sum(h * w for h, w in SCHEDULE) - 1, d, generator=torch.Generator().manual_seed(3)).sign()
    with torch.no_grad():
        return model(random_text((3, 5), model.config.text_channels), inputs, SCHEDULE)


def _strip(name: str) -> str:
    return name.replace(".base_layer", "")


def test_only_the_adapter_trains(run):
    model = run["trainer"].model
    base = InfinityTransformer.from_pretrained(run["base"] / "transformer").state_dict()
    for name, tensor in model.state_dict().items():
        if "lora_" not in name:
            assert torch.equal(tensor, base[_strip(name)]), f"frozen {name} changed"
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: every adapter was trained
    trainable = {id(p) for n, p in model.named_parameters() if p.requires_grad}
    adapters = {id(p) for n, p in model.named_parameters() if "lora_" in n}
    optimised = {id(p) for group in run["trainer"].optimizer.param_groups for p in group["params"]}
    assert trainable == adapters == optimised
    # 7 projections per block, rank 4: (in + out) * 4 each
    expected = sum(4 * (m.in_features + m.out_features) for n, m in model.named_modules() if n.endswith("base_layer"))
    assert adapter_parameters(model) == expected and len([n for n in dict(model.named_modules()) if n.endswith("base_layer")]) == 14


def test_the_saved_adapter_is_small_and_reloads_exactly(run):
    adapter = run["adapter"]
    assert {p.name for p in adapter.iterdir()} == {ADAPTER_WEIGHTS, "adapter_config.json", "infinity_lora.json"}
    base_bytes = (run["base"] / "transformer" / "model.safetensors").stat().st_size
    assert (adapter / ADAPTER_WEIGHTS).stat().st_size < 0.1 * base_bytes
    trained = run["trainer"].model.eval()
    pipe = InfinityPipeline.from_pretrained(run["base"], lora=adapter)
    assert torch.equal(_logits(pipe.transformer), _logits(trained))
    live = InfinityPipeline(trained, pipe.tokenizer, pipe.text_encoder, pipe.defaults)
    a = pipe(PROMPT, image_size=(32, 32), seed=5)
    b = live(PROMPT, image_size=(32, 32), seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.bits, b.bits, strict=True))
    # the adapter changes the model: the base alone gives other logits
    plain = InfinityPipeline.from_pretrained(run["base"])
    assert not torch.allclose(_logits(plain.transformer), _logits(trained), atol=1e-3)
    # merged == unmerged up to fp32 rounding, and the layers are plain nn.Linear again
    unmerged = _logits(pipe.transformer)
    pipe.merge_lora()
    assert not has_lora(pipe.transformer) and type(pipe.transformer.blocks[0].sa.mat_qkv) is nn.Linear
    torch.testing.assert_close(_logits(pipe.transformer), unmerged, rtol=1e-5, atol=1e-5)


def test_an_adapter_refuses_the_wrong_base(run, tmp_path):
    other = build_tiny_pipeline(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match=r"was trained on other base weights \(fingerprint \w+, this transformer \w+\)"):
        InfinityPipeline.from_pretrained(other, lora=run["adapter"])
    wider = tiny_transformer(run["trainer"].model_config.replace(depth=3))
    with pytest.raises(ValueError, match=r"another architecture than this transformer \(depth 2 vs 3\)"):
        load_adapter(wider, run["adapter"])
    assert not has_lora(wider)  # checked before anything is injected
    merged = InfinityPipeline.from_pretrained(run["base"], lora=run["adapter"]).merge_lora()
    with pytest.raises(ValueError, match="other base weights"):  # merged weights are no longer the base
        merged.load_lora(run["adapter"])
    with pytest.raises(FileNotFoundError, match=r"an adapter directory holds adapter_model\.safetensors"):
        merged.load_lora(tmp_path)
    # the fingerprint sees through dtype (bf16 blocks) but not through a changed weight
    model = tiny_transformer(seed=0)
    fingerprint = base_fingerprint(model)
    assert base_fingerprint(tiny_transformer(seed=0).cast_blocks(torch.bfloat16)) == fingerprint
    with torch.no_grad():
        model.blocks[1].ffn.fc2.weight[0, 0] += 1.0
    assert base_fingerprint(model) != fingerprint


def test_generate_cli_loads_and_merges_an_adapter(run, tmp_path, capsys):
    argv = ["generate", PROMPT, "--weights", str(run["base"]), "--image-size", "32x32", "--seed", "2"]
    assert cli_main([*argv, "--lora", str(run["adapter"]), "-o", str(tmp_path / "lora.png")]) == 0
    pipe = InfinityPipeline.from_pretrained(run["base"], lora=run["adapter"]).merge_lora()
    expected = pipe(PROMPT, image_size=(32, 32), seed=2).images[0]
    assert torch.equal(torch.from_numpy(np.array(Image.open(tmp_path / "lora.png"))), torch.from_numpy(np.array(expected)))
    other = build_tiny_pipeline(tmp_path / "other", seed=1)
    argv[3] = str(other)
    assert cli_main([*argv, "--lora", str(run["adapter"]), "-o", str(tmp_path / "x.png")]) == 1
    assert "was trained on other base weights" in capsys.readouterr().err


def test_checkpoints_resume_and_export_the_adapter(run, tmp_path):
    root, base = run["root"], run["base"]
    split = ARTrainer(load_config(None, _overrides(base, tmp_path / "split")))
    split.fit(max_steps=2)
    resumed = ARTrainer(load_config(None, _overrides(base, tmp_path / "split")))
    assert resumed.step == 2
    resumed.fit()
    for (name, a), b in zip(run["trainer"].model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    with pytest.raises(ValueError, match=r"lora.rank: checkpoint 4 vs config 8"):
        ARTrainer(load_config(None, _overrides(base, tmp_path / "split", "lora.rank=8")))
    latest = CheckpointStore(root / "run" / "checkpoints").latest()
    out = export_checkpoint(latest, tmp_path / "exported")
    exported = InfinityPipeline.from_pretrained(out, lora=out / "lora")
    assert torch.equal(_logits(exported.transformer), _logits(run["trainer"].model.eval()))
    frozen = InfinityTransformer.from_pretrained(out / "transformer").state_dict()
    for key, value in InfinityTransformer.from_pretrained(base / "transformer").state_dict().items():
        assert torch.equal(frozen[key], value), key  # the exported transformer is the untouched base


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lora.rank=-1", r"lora.rank must be >= 0"),
        ("lora.alpha=0", r"lora.alpha must be positive"),
        ("lora.dropout=1.0", r"lora.dropout must be in \[0, 1\)"),
        ('lora.targets=["sa.qkv"]', r"lora.targets \['sa.qkv'\] must be a non-empty subset of \['sa.mat_qkv'"),
        ("lora.rnak=4", r"rnak"),
    ],
)
def test_config_errors_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_lora_with_fsdp_is_refused_before_ray_starts(tmp_path):
    from bitwise_ar.train.ray_entry import run_ray

    config = load_config(None, [f"run.out_dir={tmp_path}", "lora.rank=4", "ray.strategy=fsdp", "ray.num_workers=2"])
    with pytest.raises(ValueError, match=r"lora.rank > 0 cannot run with ray.strategy=fsdp; use ray.strategy=ddp"):
        run_ray(config)
    assert not (tmp_path / "ray").exists()


def test_targets_choose_the_wrapped_layers():
    model = tiny_transformer(seed=0)
    config = load_config(None, ['lora.targets=["ffn.fc1", "ca.mat_kv"]', "lora.rank=2"]).lora
    add_lora(model, config)
    wrapped = sorted(n.removesuffix(".base_layer") for n, _ in model.named_modules() if n.endswith("base_layer"))
    assert wrapped == ["blocks.0.ca.mat_kv", "blocks.0.ffn.fc1", "blocks.1.ca.mat_kv", "blocks.1.ffn.fc1"]
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


@pytest.mark.ray_cluster
@pytest.mark.slow
def test_a_one_worker_ddp_lora_run_on_ray_train(run, tmp_path):
    """End to end on Ray Train (run as ``flock /tmp/infinity-ray.lock uv run pytest ...``): the adapter trains under
    DDP, is exported next to the untouched base, reloads onto it, and is logged to the run's MLflow store."""
    pytest.importorskip("ray")
    mlflow = pytest.importorskip("mlflow")
    from bitwise_ar.train.ray_entry import run_ray
    from infinity_run.ray_train import init_ray

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # word-hash text features (model.text_encoder=""): the export is then logged as plain files, not a pyfunc model
    overrides = _overrides(run["base"], tmp_path / "ray_run", "ray.num_workers=1", "ray.strategy=ddp",
                           "tracking.kind=mlflow", f"tracking.tracking_uri={uri}", "model.text_encoder=")  # fmt: skip
    init_ray(num_cpus=2, include_dashboard=False)
    try:
        result = run_ray(load_config(None, overrides))
    finally:
        import ray

        ray.shutdown()
    exported = result["model_dir"]
    assert read_manifest_step(result["checkpoint"]) == 3
    base = InfinityTransformer.from_pretrained(run["base"] / "transformer")
    exported_model = load_adapter(InfinityTransformer.from_pretrained(exported / "transformer"), exported / "lora")
    worker = load_adapter(InfinityTransformer.from_pretrained(run["base"] / "transformer"), tmp_path / "ray_run" / "lora")
    assert torch.equal(_logits(exported_model), _logits(worker))  # the driver's export == rank 0's adapter
    assert not torch.allclose(_logits(exported_model), _logits(base), atol=1e-4)
    client = mlflow.MlflowClient(tracking_uri=uri)
    logged = {a.path for a in client.list_artifacts(result["mlflow_run_id"], "lora")}
    assert {"lora/adapter_model.safetensors", "lora/adapter_config.json", "lora/infinity_lora.json"} <= logged
    assert client.get_run(result["mlflow_run_id"]).data.params["lora.rank"] == "4"


def read_manifest_step(checkpoint) -> int:
    from infinity_run.checkpoint import read_manifest

    return int(read_manifest(checkpoint)["step"])


def test_the_training_doc_lora_commands_run(tmp_path, monkeypatch):
    """docs/training.md's LoRA block as written (train a base, adapt it, export), at 32 px."""
    import re
    import shlex
    from pathlib import Path

    from bitwise_ar.train.__main__ import main as train_main

    root = Path(__file__).resolve().parents[3]
    doc = (root / "docs" / "training.md").read_text()
    section = doc.split("## LoRA fine-tuning", 1)[1].split("\n## ", 1)[0]
    lines = [line for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S) for line in block.splitlines()]
    assert len(lines) == 3
    (tmp_path / "configs").symlink_to(root / "configs")
    monkeypatch.chdir(tmp_path)
    for line in lines:
        argv = shlex.split(line)
        if "bitwise_ar.train" in argv:
            assert train_main([*argv[argv.index("bitwise_ar.train") + 1 :], "data.image_size=32"]) == 0
        else:
            assert cli_main(argv[argv.index("bitwise-ar") + 1 :]) == 0
    exported = tmp_path / "outputs" / "lora_pipeline"
    base = InfinityTransformer.from_pretrained(exported / "transformer")
    load_adapter(base, exported / "lora")
    assert adapter_parameters(base) > 0 and (tmp_path / "outputs" / "lora" / "lora" / ADAPTER_WEIGHTS).is_file()


def test_the_lora_benchmark_arms_measure_what_they_claim():
    """bench/bench_lora.py's two arms on the debug preset, in-process: LoRA trains only its adapters."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "bench" / "bench_lora.py"
    spec = importlib.util.spec_from_file_location("bench_lora", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lora, full = bench.run_arm("tiny", 4, 1), bench.run_arm("tiny", 0, 1)
    assert lora["total_params"] == full["total_params"] == full["trainable_params"]
    assert lora["trainable_params"] == lora["adapter_params"] > 0 and full["adapter_params"] == 0
    # AdamW keeps two moments (+ a step count) per trainable tensor
    assert lora["optimizer_state_bytes"] < 0.5 * full["optimizer_state_bytes"]
    assert lora["optimizer_state_bytes"] >= 8 * lora["trainable_params"]


@pytest.mark.parametrize("target", ["sa.mat_qkv", "sa.proj", "ca.mat_q", "ca.mat_kv", "ca.proj", "ffn.fc1", "ffn.fc2"])
def test_every_target_takes_part_in_the_forward(target):
    """An adapter on any one projection changes the logits (a layer whose weight is read directly with ``F.linear``
    instead of calling the module would bypass it)."""
    model = tiny_transformer(seed=0)
    before = _logits(model)
    add_lora(model, load_config(None, [f'lora.targets=["{target}"]', "lora.rank=2"]).lora)
    assert torch.equal(_logits(model), before)  # B = 0: the adapted model starts as the base
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(_logits(model), before, atol=1e-4)
