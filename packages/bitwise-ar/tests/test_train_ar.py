"""AR training: loss weighting, BSC, optimiser groups, config validation, in-process steps, checkpoints, resume."""

from __future__ import annotations

import math

import pytest
import torch
from bitwise_ar.train.config import TrainConfig, load_config
from bitwise_ar.train.loss import bitwise_loss, token_weights
from bitwise_ar.train.optim import lr_at, param_groups
from bitwise_ar.train.trainer import ARTrainer
from bsq_tokenizer.multiscale import sample_flip_probs
from bsq_tokenizer.quantizers import bits_to_indices
from infinity_run.checkpoint import CheckpointStore, read_manifest

SCHEDULE = [(1, 1), (2, 2), (4, 4)]


def _config(tmp_path, *overrides: str) -> TrainConfig:
    base = [
        f"run.out_dir={tmp_path}",
        "data.source=synthetic",
        "data.batch_size=2",
        "data.image_size=32",
        "train.steps=2",
        "optim.lr=1e-3",
        "run.checkpoint_every=1",
    ]
    return load_config(None, base + list(overrides))


def test_token_weights_follow_sqrt_area_rule():
    w = token_weights(SCHEDULE)
    assert w.shape == (21,) and math.isclose(float(w.sum()), 1.0, rel_tol=1e-6)
    # per token: w_k ∝ sqrt(16) / sqrt(h_k w_k) -> 4 : 2 : 1
    assert torch.allclose(torch.stack([w[0], w[1], w[5]]) / w[5], torch.tensor([4.0, 2.0, 1.0]))
    assert torch.allclose(token_weights(SCHEDULE, reweight=False), torch.full((21,), 1 / 21))


def test_bitwise_loss_matches_a_direct_computation_and_index_head():
    g = torch.Generator().manual_seed(0)
    d = 3
    logits = torch.randn(2, 21, 2 * d, generator=g)
    labels = torch.randint(0, 2, (2, 21, d), generator=g)
    loss, metrics = bitwise_loss(logits, labels, SCHEDULE)
    logp = torch.log_softmax(logits.view(2, 21, d, 2), -1).gather(-1, labels[..., None]).squeeze(-1)
    expected = (-logp.mean(-1) * token_weights(SCHEDULE)).sum(-1).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert 0 <= metrics["acc_token"] <= metrics["acc_bit"] <= 1 and "acc_bit_s02" in metrics
    perfect = torch.where(labels[..., None].bool(), torch.tensor([-9.0, 9.0]), torch.tensor([9.0, -9.0])).flatten(2)
    assert bitwise_loss(perfect, labels, SCHEDULE)[1]["acc_token"] == 1.0
    index_logits = torch.full((2, 21, 2**d), -9.0).scatter(-1, bits_to_indices(labels)[..., None], 9.0)
    loss_i, metrics_i = bitwise_loss(index_logits, labels, SCHEDULE)
    assert metrics_i["acc_token"] == 1.0 and float(loss_i) < 1e-6
    with pytest.raises(ValueError, match="expected 2d"):
        bitwise_loss(torch.zeros(2, 21, 5), labels, SCHEDULE)


def test_flip_rates_are_uniform_on_the_official_grid():
    g = torch.Generator().manual_seed(0)
    draws = [p for _ in range(300) for p in sample_flip_probs(5, 0.3, g)]
    assert min(draws) == 0.0 and max(draws) == 0.3
    assert all(abs(p * 100 - round(p * 100)) < 1e-9 for p in draws)
    assert abs(sum(draws) / len(draws) - 0.15) < 0.02
    assert sample_flip_probs(3, 0.3, g, num_noised=1)[1:] == [0.0, 0.0]


def test_no_decay_groups_and_schedule(tmp_path):
    trainer = ARTrainer(_config(tmp_path))
    decay, no_decay = param_groups(trainer.model, 0.005)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert {"cfg_uncond", "pos_start", "lvl_embed.weight", "text_proj_for_sos.ca.mat_q"} <= no_decay_names
    assert any("ada_gss" in n for n in no_decay_names) and any("scale_mul" in n for n in no_decay_names)
    assert all(not names[id(p)].endswith("bias") and p.ndim > 1 for p in decay["params"])
    assert "word_embed.weight" in {names[id(p)] for p in decay["params"]}
    optim = load_config(
        None, ["optim.lr=1.0", "optim.warmup_steps=10", "optim.schedule=cosine", "optim.min_lr_ratio=0.1"]
    ).optim
    assert lr_at(0, 110, optim) == pytest.approx(0.005)
    assert lr_at(10, 110, optim) == pytest.approx(1.0)
    assert lr_at(110, 110, optim) == pytest.approx(0.1)


def test_config_errors_name_the_valid_keys(tmp_path):
    with pytest.raises(ValueError, match=r"override 'optim.lrr=1': unknown key 'lrr' in optim; valid keys: \[.*'lr'"):
        load_config(None, ["optim.lrr=1"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nstepz = 3\n")
    with pytest.raises(ValueError, match=r"bad.toml \[train\]: unknown keys \['stepz'\] in TrainSection"):
        load_config(bad)
    with pytest.raises(ValueError, match=r"override 'train.steps=many': expected an integer"):
        load_config(None, ["train.steps=many"])
    assert load_config(None, ['run.out_dir="/tmp/x y"']).run.out_dir == "/tmp/x y"
    assert load_config(None, ["run.out_dir=/tmp/x"]).run.out_dir == "/tmp/x"
    with pytest.raises(ValueError, match=r"model\.preset .nope. unknown"):
        load_config(None, ["model.preset=nope"])
    assert load_config(None, ["model.overrides.depth=3"]).model.overrides == {"depth": 3}


def test_two_debug_steps_in_process_then_resume_continuously(tmp_path):
    full = ARTrainer(_config(tmp_path / "full", "train.steps=4"))
    full.fit()
    first = ARTrainer(_config(tmp_path / "split", "train.steps=4"))
    metrics = first.fit(max_steps=2)
    assert first.step == 2 and math.isfinite(metrics["train/loss"])
    for key in ("train/acc_bit", "scale/loss_s00", "time/forward_s", "time/backward_s", "train/tokens_per_s"):
        assert key in metrics
    path = CheckpointStore(tmp_path / "split" / "checkpoints").latest()
    manifest = read_manifest(path)
    assert manifest["step"] == 2 and manifest["meta"]["data"]["batch"] == 2 and manifest["has_optimizer"]
    assert {"model_config", "sampler", "train_config"} <= set(manifest["meta"])
    resumed = ARTrainer(_config(tmp_path / "split", "train.steps=4"))
    assert resumed.step == 2 and resumed.resumed_from == path
    resumed.fit()
    assert resumed.step == 4
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_resuming_with_an_incompatible_config_is_refused(tmp_path):
    ARTrainer(_config(tmp_path)).fit()
    with pytest.raises(ValueError, match=r"incompatible config \(data.batch_size: checkpoint 2 vs config 3"):
        ARTrainer(_config(tmp_path, "data.batch_size=3"))
    with pytest.raises(ValueError, match=r"data.seed: checkpoint 0 vs config 7"):
        ARTrainer(_config(tmp_path, "data.seed=7"))


def test_teacher_forcing_inputs_are_the_exact_prefixes(tmp_path):
    from bsq_tokenizer.multiscale import multiscale_quantize, transformer_inputs

    trainer = ARTrainer(_config(tmp_path, "train.teacher_forcing=true"))
    images, captions, keys = next(iter(trainer.source))
    prepared = trainer.prepare(images, captions, keys)
    features = trainer.tokenizer.encode_features(images)
    bits, _ = multiscale_quantize(features, prepared["schedule"])
    assert prepared["flip"] == [0.0] * len(prepared["schedule"])
    assert torch.equal(prepared["inputs"], transformer_inputs(bits, prepared["schedule"]))
    bsc = ARTrainer(_config(tmp_path / "bsc", "train.bsc_max_flip=1.0"))
    assert any(p > 0 for p in bsc.prepare(images, captions)["flip"])
