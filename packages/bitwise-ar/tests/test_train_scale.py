"""Training past one process: 1 worker == 2-worker DDP == 2-worker FSDP2 (losses and weights), a killed worker
resumes from the last sharded checkpoint, resume across world sizes 2 -> 1 -> 2, ``model.init_from`` on the
official fixtures (one process and 2-worker FSDP), and the bad inputs of that path."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest
import torch
from bitwise_ar.train.config import load_config
from bitwise_ar.train.trainer import ARTrainer, build_model
from infinity_run.checkpoint import CheckpointStore, read_manifest

STEPS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_CHILD = (
    "import importlib.util, json, sys\n"
    "spec = importlib.util.spec_from_file_location('train_scale_ranks', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "module._rank_entry(*json.loads(sys.argv[2]))\n"
)


def _rank_entry(rank: int, world_size: int, port: int, name: str, args: list, out: str) -> None:
    """One rank in a fresh interpreter (no fork: a forked child cannot use autograd once the parent has)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.save(globals()[name](rank, *args), out)
    finally:
        torch.distributed.destroy_process_group()


def _run_ranks(fn, world_size: int, *args) -> list:
    """Run ``fn(rank, *args)`` (a function of this module, JSON-able args) in ``world_size`` processes joined in a
    gloo process group; their results."""
    import subprocess
    import sys
    import tempfile

    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for rank in range(world_size):
            spec = [rank, world_size, port, fn.__name__, list(args), str(Path(tmp) / f"rank{rank}.pt")]
            procs.append(subprocess.Popen([sys.executable, "-c", _CHILD, __file__, json.dumps(spec)],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))  # fmt: skip
        outputs = [p.communicate(timeout=600)[0] for p in procs]
        for rank, (proc, output) in enumerate(zip(procs, outputs, strict=True)):
            assert proc.returncode == 0, f"rank {rank} failed:\n{output[-4000:]}"
        return [torch.load(Path(tmp) / f"rank{rank}.pt", weights_only=True) for rank in range(world_size)]


def _overrides(out_dir: Path, *extra: str) -> list[str]:
    return [
        f"run.out_dir={out_dir}", "data.source=synthetic", "data.batch_size=4", "data.image_size=32", f"train.steps={STEPS}", "optim.lr=3e-3",
        "run.log_every=1", "run.checkpoint_every=2", "run.keep_checkpoints=3", *extra,
    ]  # fmt: skip


# Runs on different worker counts sum gradients in different orders; AdamW turns that float32 noise on near-zero
# gradients into weight differences of up to ~1e-5 after a few steps (3e-6 measured on the synthetic source), while
# a wrong data position or optimiser state moves weights by ~lr = 3e-3 per step.
WORLD_ATOL = 1e-5


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------------- Ray Train
ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")


VAL = ("val.source=synthetic", "val.image_size=32", "val.batch_size=4", "val.batches=1", "val.every=3")


@pytest.fixture(scope="module")
def ray_runs(tmp_path_factory):
    """The same training three ways, tracked in one MLflow store: one process without Ray ("one"), 2-worker FSDP on
    Ray Train, and 2-worker FSDP on Ray whose rank-1 worker dies hard after step 3 (restarted by Ray, resumed from
    step 2). Each validates on held-out synthetic data every 3 steps. 1-worker and 2-worker DDP runs on Ray Train
    are in the tokenizer's 1-vs-2-worker test and the LoRA test (the same infinity_run.ray_train path); 2-worker
    DDP equals one process in the multi-process tests below."""
    from bitwise_ar.train.ray_entry import run_ray
    from infinity_run.ray_train import init_ray
    from infinity_run.tracking import tracker_for

    root = tmp_path_factory.mktemp("ray")
    uri = f"sqlite:///{root / 'mlflow.db'}"

    def config(name: str, *extra: str):
        return load_config(None, [*_overrides(root / name, *extra, *VAL), "tracking.kind=mlflow",
                                  f"tracking.tracking_uri={uri}", f"tracking.run_name={name}"])  # fmt: skip

    one = config("one")
    tracker = tracker_for(one.tracking, one.run.out_dir)
    trainer = ARTrainer(one, tracker=tracker)
    trainer.fit()
    tracker.finish()
    results = {"one": {"mlflow_run_id": tracker.run_id, "weights": _weights(trainer.model)}}
    arms = {
        "fsdp": ["ray.num_workers=2", "ray.strategy=fsdp"],
        "fsdp_killed": ["ray.num_workers=2", "ray.strategy=fsdp", "ray.max_failures=1", "run.image_every=3"],
    }
    init_ray(num_cpus=2, include_dashboard=False)
    try:
        for name, extra in arms.items():
            kill = {"kill_at_step": 3, "kill_rank": 1} if name == "fsdp_killed" else {}
            results[name] = run_ray(config(name, *extra), **kill)
    finally:
        ray.shutdown()
    return root, uri, results


def _history(uri: str, run_id: str, key: str) -> list:
    return mlflow.MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)


@pytest.mark.ray_cluster
@pytest.mark.slow
def test_one_worker_and_fsdp_train_identically(ray_runs):
    from bitwise_ar.model import InfinityTransformer

    _, uri, results = ray_runs
    losses = {}
    for name in ("one", "fsdp"):
        history = _history(uri, results[name]["mlflow_run_id"], "train/loss")
        assert sorted(m.step for m in history) == list(range(1, STEPS + 1)), name
        losses[name] = torch.tensor([m.value for m in sorted(history, key=lambda m: m.step)])
    assert losses["one"][-1] < losses["one"][0]  # it trains
    assert torch.allclose(losses["fsdp"], losses["one"], rtol=1e-4, atol=0), (losses["fsdp"], losses["one"])
    # the validation loss: summed over the ranks' halves of each held-out batch, logged once by rank 0
    val = {}
    for name in ("one", "fsdp"):
        history = sorted(_history(uri, results[name]["mlflow_run_id"], "val_loss/bit_ce"), key=lambda m: m.step)
        assert [m.step for m in history] == [3, 6], name
        val[name] = torch.tensor([m.value for m in history])
        assert _history(uri, results[name]["mlflow_run_id"], "val_loss/num_images")[0].value == 4  # the global batch
    assert torch.allclose(val["fsdp"], val["one"], rtol=1e-4, atol=0), (val["fsdp"], val["one"])
    weights = {"one": results["one"]["weights"]}
    weights["fsdp"] = InfinityTransformer.from_pretrained(results["fsdp"]["model_dir"] / "transformer").state_dict()
    start = build_model(load_config(None, _overrides(Path("unused"))), device=torch.device("cpu"))[0].state_dict()
    assert any(not torch.equal(weights["one"][k], start[k]) for k in start)  # the weights moved
    for key, value in weights["one"].items():
        assert torch.allclose(weights["fsdp"][key], value, rtol=1e-4, atol=WORLD_ATOL), key


@pytest.mark.ray_cluster
@pytest.mark.slow
def test_killed_fsdp_worker_resumes_from_the_sharded_checkpoint(ray_runs):
    from bitwise_ar.model import InfinityTransformer

    root, uri, results = ray_runs
    killed = results["fsdp_killed"]
    assert (root / "fsdp_killed" / ".killed_once").exists()  # rank 1 really died once
    manifest = read_manifest(killed["checkpoint"])
    assert manifest["step"] == STEPS and manifest["world_size"] == 2
    assert killed["checkpoint"].parent == root / "fsdp_killed" / "ray" / "bitwise-ar-fsdp_killed"  # Ray's storage
    assert sorted(p.name for p in killed["checkpoint"].parent.glob("step_*")) == [
        "step_0000002", "step_0000004", "step_0000006"
    ]  # fmt: skip
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(killed["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["ray.num_workers"] == "2" and run.data.params["ray.strategy"] == "fsdp"
    steps = [m.step for m in _history(uri, killed["mlflow_run_id"], "train/loss")]
    assert sorted(steps) == list(range(1, STEPS + 1))  # each step once, none lost or repeated across the restart
    assert sorted(m.step for m in _history(uri, killed["mlflow_run_id"], "val_loss/bit_ce")) == [3, 6]
    # images logged with their step (MLflow's step slider), every run.image_every = 3 steps, each once
    names = [a.path for a in client.list_artifacts(killed["mlflow_run_id"], "images") if a.path.endswith(".png")]
    image_steps = sorted(int(re.search(r"teacher_forced\+step\+(\d+)\+", n)[1]) for n in names)
    assert image_steps == [3, 6]
    artifacts = [a.path for a in client.list_artifacts(killed["mlflow_run_id"], "model")]
    assert "model/transformer" in artifacts and "model/pipeline.json" in artifacts
    uninterrupted = InfinityTransformer.from_pretrained(results["fsdp"]["model_dir"] / "transformer").state_dict()
    resumed = InfinityTransformer.from_pretrained(killed["model_dir"] / "transformer").state_dict()
    for key, value in uninterrupted.items():
        assert torch.allclose(resumed[key], value, rtol=1e-5, atol=1e-7), key
    # metrics are global means: the logged loss equals the 1-worker loss over the same global batch
    one = sorted(_history(uri, results["one"]["mlflow_run_id"], "train/loss"), key=lambda m: m.step)
    two = sorted(_history(uri, killed["mlflow_run_id"], "train/loss"), key=lambda m: m.step)
    assert torch.allclose(torch.tensor([m.value for m in two]), torch.tensor([m.value for m in one]), rtol=1e-4)


def test_a_batch_the_workers_cannot_split_is_refused_before_ray_starts(tmp_path):
    from bitwise_ar.train.ray_entry import run_ray

    config = load_config(None, _overrides(tmp_path, "data.batch_size=3", "ray.num_workers=2"))
    with pytest.raises(ValueError, match=r"data.batch_size=3 \(the global batch\) cannot be split over 2 workers"):
        run_ray(config)
    config = load_config(None, _overrides(tmp_path, "ray.num_workers=2", *VAL, "val.batch_size=3"))
    with pytest.raises(ValueError, match=r"val.batch_size=3 \(the global batch\) cannot be split over 2 workers"):
        run_ray(config)
    config = load_config(None, _overrides(tmp_path, "ray.num_workers=2", *VAL, "val.source=nope"))
    with pytest.raises(ValueError, match=r"val.source 'nope' is neither an existing path nor a known source"):
        run_ray(config)
    assert not ray.is_initialized()


def test_results_inside_a_job_working_dir_are_refused(tmp_path, monkeypatch):
    from infinity_run.ray_train import preflight

    job_dir = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_1"
    job_dir.mkdir(parents=True)
    monkeypatch.chdir(job_dir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    problems = preflight(load_config(None, ["run.out_dir=outputs/x", "tracking.kind=mlflow"]))
    assert any("run.out_dir='outputs/x' lies in this Ray job's temporary working directory" in p for p in problems)
    assert any("MLflow store would be an sqlite file" in p for p in problems)
    fine = load_config(None, [f"run.out_dir={tmp_path / 'shared'}", "tracking.kind=mlflow",
                              f"tracking.tracking_uri=sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"])  # fmt: skip
    assert preflight(fine) == []


# ---------------------------------------------------------------------------------------------------- world sizes
def _train_part(rank: int, out_dir: str, steps: int, strategy: str) -> dict | None:
    trainer = ARTrainer(load_config(None, _overrides(Path(out_dir), f"train.steps={steps}")), device="cpu", strategy=strategy)
    start = trainer.step
    trainer.fit()
    from infinity_run.checkpoint import full_model_state_dict

    state = full_model_state_dict(trainer.train_model)
    return {"start": start, "weights": state} if rank == 0 else None


def test_resume_on_2_then_1_then_2_workers_equals_an_uninterrupted_run(tmp_path):
    reference = ARTrainer(load_config(None, _overrides(tmp_path / "ref")))
    reference.fit()
    expected = _weights(reference.model)
    out = str(tmp_path / "split")
    first = _run_ranks(_train_part, 2, out, 2, "fsdp")[0]
    assert first["start"] == 0
    middle = ARTrainer(load_config(None, _overrides(Path(out), "train.steps=4")))
    assert middle.step == 2 and read_manifest(middle.resumed_from)["world_size"] == 2
    middle.fit()
    last = _run_ranks(_train_part, 2, out, STEPS, "ddp")[0]
    assert last["start"] == 4
    for key, value in expected.items():
        assert torch.allclose(last["weights"][key], value, rtol=1e-4, atol=WORLD_ATOL), key


def test_an_incomplete_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    trainer = ARTrainer(load_config(None, _overrides(tmp_path, "train.steps=4")))
    trainer.fit()
    store = CheckpointStore(tmp_path / "checkpoints")
    newest = store.path(4)
    shard = next(newest.glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a copy cut in half
    with caplog.at_level("WARNING"):
        resumed = ARTrainer(load_config(None, _overrides(tmp_path, "train.steps=4")))
    assert resumed.step == 2 and resumed.resumed_from == store.path(2)
    assert any("skipping incomplete checkpoint" in r.message and "step_0000004" in r.message for r in caplog.records)
    (store.path(2) / "manifest.json").unlink()  # a write killed before its manifest
    assert ARTrainer(load_config(None, _overrides(tmp_path, "train.steps=4"))).step == 0


# ---------------------------------------------------------------------------------------------------- init_from

def _fixture_config(fx, out_dir: Path, init_from: Path, *extra: str):
    from bitwise_ar.config import from_official_config

    arch = from_official_config(fx["official_config"]).to_dict()
    overrides = [f"model.overrides.{k}={json.dumps(v)}" for k, v in arch.items()]
    return load_config(None, [f"run.out_dir={out_dir}", f"model.init_from={init_from}", *overrides, *extra])


def _fixture_logits(rank: int, fixture: str, out_dir: str, init_from: str, strategy: str) -> torch.Tensor:
    from bitwise_ar.model import PackedText

    fx = torch.load(fixture, map_location="cpu", weights_only=True)
    model, train_model = build_model(_fixture_config(fx, Path(out_dir), Path(init_from)), device=torch.device("cpu"), strategy=strategy)
    model.eval()
    with torch.no_grad():
        return train_model(PackedText.from_padded(fx["text_features"], fx["text_lengths"]), fx["transformer_inputs"], fx["scale_schedule"])


def test_init_from_official_weights_gives_the_official_logits(official_infinity_fixture, tmp_path):
    from safetensors.torch import save_file

    fixture = official_infinity_fixture
    fx = torch.load(fixture, map_location="cpu", weights_only=True)
    expected = fx["teacher_forcing_logits"]
    flat = tmp_path / "official.pth"
    torch.save(fx["state_dict"], flat)
    nested = tmp_path / "trainer.pth"
    torch.save({"trainer": {"gpt_fsdp": fx["state_dict"]}}, nested)
    sharded = tmp_path / "8b_style"
    sharded.mkdir()
    keys = sorted(fx["state_dict"])
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in halves.items():
        save_file({k: fx["state_dict"][k].contiguous() for k in part}, sharded / name)
    index = {"weight_map": {k: name for name, part in halves.items() for k in part}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    for source in (flat, nested, sharded / "model.safetensors.index.json"):
        logits = _fixture_logits(0, str(fixture), str(tmp_path / "run"), str(source), "none")
        assert (logits - expected).abs().max().item() <= 1e-4, source.name
    # our own directory layout (what `bitwise-ar convert-official` writes) loads the same way
    from bitwise_ar.config import from_official_config
    from bitwise_ar.weights import convert_official

    ours = convert_official(flat, tmp_path / "pipeline" / "transformer", from_official_config(fx["official_config"]))
    for source in (ours, ours.parent):
        logits = _fixture_logits(0, str(fixture), str(tmp_path / "run"), str(source), "none")
        assert (logits - expected).abs().max().item() <= 1e-4, source
    # 2-worker FSDP (every rank loads only its shards) and DDP compute the same logits
    for strategy in ("fsdp", "ddp"):
        for logits in _run_ranks(_fixture_logits, 2, str(fixture), str(tmp_path / "run"), str(flat), strategy):
            assert (logits - expected).abs().max().item() <= 1e-4, strategy


def test_init_from_weights_of_another_shape_lists_the_differences(official_infinity_fixture, tmp_path):
    from bitwise_ar.weights import CheckpointMismatchError

    fixture = official_infinity_fixture
    fx = torch.load(fixture, map_location="cpu", weights_only=True)
    flat = tmp_path / "official.pth"
    torch.save(fx["state_dict"], flat)
    config = _fixture_config(fx, tmp_path, flat, "model.overrides.depth=2", "model.overrides.embed_dim=128")
    with pytest.raises(CheckpointMismatchError, match=r"init_from .* does not match the model.*unexpected keys: blocks\.2\..*shape mismatches"):
        build_model(config, device=torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match=r"model\.init_from .*missing\.pth not found"):
        build_model(_fixture_config(fx, tmp_path, tmp_path / "missing.pth"), device=torch.device("cpu"))


# ---------------------------------------------------------------------------------------------------- memory model
def _saved_activation_bytes(model: torch.nn.Module, batch: int, schedule: list[tuple[int, int]]) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one training forward (parameters excluded)."""
    from bitwise_ar.testing import random_text

    config = model.config
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    tokens = sum(h * w for h, w in schedule)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(random_text([8] * batch, config.text_channels), torch.randn(batch, tokens - 1, config.codebook_dim), schedule)
    return sum(kept.values())


@pytest.mark.parametrize("overrides", [{}, {"embed_dim": 128, "mlp_ratio": 8.0}, {"depth": 4}], ids=["debug", "wide", "deep"])
def test_activation_memory_model_matches_the_measured_saved_tensors(overrides):
    from bitwise_ar.config import PRESETS
    from bitwise_ar.costs import training_memory_bytes
    from bitwise_ar.model import InfinityTransformer
    from bitwise_ar.train.trainer import enable_activation_checkpointing

    config = PRESETS["debug"].replace(**overrides)
    schedule = [(1, 1), (2, 2), (4, 4), (8, 8), (16, 16)]
    tokens = sum(h * w for h, w in schedule)
    for checkpointing in (False, True):
        model = InfinityTransformer(config).init_weights(0).train()
        if checkpointing:
            enable_activation_checkpointing(model)
        measured = _saved_activation_bytes(model, 2, schedule)
        predicted = training_memory_bytes(config, tokens_per_sample=tokens, batch_per_gpu=2, activation_bytes=4,
                                          activation_checkpointing=checkpointing)["activations"]  # fmt: skip
        if checkpointing:  # the recomputed block's activations live during the backward pass, not after forward
            block = (23.3 * config.embed_dim + 2.0 * config.ffn_hidden) * tokens * 2 * 4
            predicted -= block
        assert abs(predicted - measured) / measured < 0.15, (checkpointing, predicted, measured)


def _sharded_state_bytes(rank: int) -> dict:
    trainer = ARTrainer(load_config(None, _overrides(Path(f"/tmp/unused-{os.getpid()}"), "train.steps=1",
                                                     "run.checkpoint_every=0")), device="cpu", strategy="fsdp")  # fmt: skip
    trainer.fit()
    local = sum(p.to_local().numel() * p.to_local().element_size() for p in trainer.model.parameters())
    optim = sum(
        v.to_local().numel() * v.to_local().element_size() if hasattr(v, "to_local") else v.numel() * v.element_size()
        for state in trainer.optimizer.state.values() for v in state.values() if torch.is_tensor(v) and v.ndim > 0
    )  # fmt: skip
    return {"weights": local, "optimizer": optim}


def test_fsdp_shards_weights_and_optimizer_state_as_the_memory_model_says():
    from bitwise_ar.config import PRESETS
    from bitwise_ar.costs import training_memory_bytes

    predicted = training_memory_bytes(PRESETS["debug"], tokens_per_sample=1, batch_per_gpu=1, world_size=2)
    for measured in _run_ranks(_sharded_state_bytes, 2):
        for term in ("weights", "optimizer"):  # shards are padded to equal sizes: a few percent over P / N
            assert 0.95 < measured[term] / predicted[term] < 1.1, (term, measured[term], predicted[term])


def _accumulated(rank: int, out_dir: str, strategy: str) -> dict | None:
    from infinity_run.checkpoint import full_model_state_dict

    config = load_config(None, _overrides(Path(out_dir), "train.steps=2", "optim.grad_accum=2", "run.checkpoint_every=0"))
    trainer = ARTrainer(config, device="cpu", strategy=strategy)
    trainer.fit()
    state = full_model_state_dict(trainer.train_model)
    return state if rank == 0 else None


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_gradient_accumulation_without_inner_syncs_matches_one_process(tmp_path, strategy):
    reference = ARTrainer(load_config(None, _overrides(tmp_path / "one", "train.steps=2", "optim.grad_accum=2",
                                                       "run.checkpoint_every=0")))  # fmt: skip
    reference.fit()
    state = _run_ranks(_accumulated, 2, str(tmp_path / strategy), strategy)[0]
    for key, value in _weights(reference.model).items():
        assert torch.allclose(state[key], value, rtol=1e-4, atol=WORLD_ATOL), key
