"""Tokenizer training: differentiable multi-scale BSQ, entropy/commitment, perceptual and GAN losses, the loop."""

from __future__ import annotations

import math

import pytest
import torch
from bsq_tokenizer import BSQTokenizer
from bsq_tokenizer.config import TokenizerConfig
from bsq_tokenizer.multiscale import multiscale_quantize
from bsq_tokenizer.train import (
    PatchDiscriminator,
    PerceptualLoss,
    TokenizerTrainConfig,
    TokenizerTrainer,
    entropy_penalty,
    hinge_d_loss,
    hinge_g_loss,
    quantize_for_training,
)

TINY = TokenizerConfig(
    codebook_dim=8, base_channels=8, channel_multipliers=(1, 2, 2), num_res_blocks=1, patch_size=4, norm_groups=4
)
SCHEDULE = [(1, 1), (2, 2), (4, 4), (8, 8)]


def test_training_quantiser_forward_equals_the_inference_quantiser():
    features = torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = quantize_for_training(features, SCHEDULE)
    _, summed = multiscale_quantize(features.detach(), SCHEDULE)
    assert torch.allclose(out.summed_BdHW, summed, atol=1e-5)
    assert all(out.kept) and len(out.commitment) == 4
    out.summed_BdHW.sum().backward()  # straight-through: gradients reach the features
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_scale_dropout_keeps_the_last_scale_and_skips_losses():
    g = torch.Generator().manual_seed(0)
    kept = [
        quantize_for_training(torch.randn(1, 8, 8, 8), SCHEDULE, drop_prob=0.5, generator=g).kept for _ in range(40)
    ]
    assert all(k[-1] for k in kept)
    rate = sum(not k[i] for k in kept for i in range(3)) / (40 * 3)
    assert 0.3 < rate < 0.7
    out = quantize_for_training(torch.randn(1, 8, 8, 8), SCHEDULE, drop_prob=0.99, generator=g)
    assert out.commitment[0] is None and math.isfinite(float(out.mean_loss(1.0, 0.1)))


def test_entropy_penalty_rewards_confident_balanced_bits():
    d = 4
    # confident and balanced: half the tokens +, half - on every bit -> H_ps ~ 0, H_cb = d ln 2
    u = torch.cat([torch.ones(1, d, 1, 8), -torch.ones(1, d, 1, 8)], dim=-1) / math.sqrt(d)
    assert float(entropy_penalty(u)) == pytest.approx(-d * math.log(2), abs=1e-3)
    # confident but collapsed (all tokens the same code): both entropies ~ 0
    assert float(entropy_penalty(torch.ones(1, d, 2, 8) / math.sqrt(d))) == pytest.approx(0.0, abs=1e-3)
    # undecided bits (u = 0): H_ps = H_cb = d ln 2 -> 0, but worse than the balanced confident case
    assert float(entropy_penalty(torch.zeros(1, d, 2, 8))) == pytest.approx(0.0, abs=1e-3)


def test_perceptual_loss_with_a_saved_random_backbone(tmp_path):
    g = torch.Generator().manual_seed(0)
    random_net = PerceptualLoss(width=1.0, generator=g)
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in random_net.features.state_dict().items()}, path)
    loss = PerceptualLoss(path)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-7)
    assert float(loss(x, y)) > 0 and torch.allclose(loss(x, y), random_net(x, y), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="vgg16 state dict"):
        PerceptualLoss(tmp_path / "missing.pth")


def test_hinge_losses():
    d = PatchDiscriminator(channels=8, num_layers=2)
    logits = d(torch.randn(2, 3, 32, 32))
    assert logits.shape[0] == 2 and logits.shape[1] == 1
    assert float(hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0))) == 0.0
    assert float(hinge_d_loss(torch.zeros(4), torch.zeros(4))) == 2.0
    assert float(hinge_g_loss(torch.full((4,), 3.0))) == -3.0


def _images(step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step % 2)
    x = torch.zeros(4, 3, 32, 32)
    for i in range(4):  # flat coloured squares on a light background: easy to reconstruct
        x[i] = 0.9
        r, c = (int(v) for v in torch.randint(0, 20, (2,), generator=g))
        x[i, :, r : r + 12, c : c + 12] = torch.rand(3, 1, 1, generator=g) * 2 - 1
    return x


def test_training_reduces_reconstruction_error_and_resumes(tmp_path):
    config = TokenizerTrainConfig(
        model=TINY,
        steps=20,
        lr=3e-3,
        perceptual_weight=0.1,
        gan_weight=0.1,
        gan_start_step=10,
        discriminator_channels=8,
        log_every=10,
        checkpoint_every=10,
    )

    def stream(start: int = 0):
        step = start
        while True:
            yield _images(step)
            step += 1

    trainer = TokenizerTrainer(config, out_dir=tmp_path)
    first = trainer.train_step(_images(0))
    model = trainer.fit(stream(1))
    assert trainer.step == 20
    loaded = BSQTokenizer.from_pretrained(tmp_path / "tokenizer")
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    final = trainer.train_step(_images(0))
    assert final["loss/l1"] < 0.7 * first["loss/l1"]
    assert {"loss/gan_d", "loss/perceptual", "psnr"} <= set(final)
    assert any(k.startswith("scale/commitment_s") for k in final)  # the kept scales (scale dropout is random)
    resumed = TokenizerTrainer(config, out_dir=tmp_path)
    assert resumed.step == 20
    with pytest.raises(ValueError, match="different tokenizer architecture"):
        TokenizerTrainer(
            TokenizerTrainConfig(
                model=TokenizerConfig(**{**TINY.to_dict(), "codebook_dim": 6, "channel_multipliers": (1, 2, 2)})
            ),
            out_dir=tmp_path,
        )


def test_flipped_summed_codes_follow_the_bsc_chain():
    from bsq_tokenizer.multiscale import bits_to_codes, flip_and_requantize, flipped_summed_codes

    f = torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    _, clean = multiscale_quantize(f, SCHEDULE)
    assert torch.allclose(flipped_summed_codes(f, SCHEDULE, [0.0] * 4), clean, atol=1e-6)
    # Earlier scales flipped, last scale clean: the sum is the last BSC input plus the last (re-quantised) labels.
    probs = [0.2, 0.3, 0.25, 0.0]
    noisy = flipped_summed_codes(f, SCHEDULE, probs, torch.Generator().manual_seed(5))
    inputs, labels = flip_and_requantize(f, SCHEDULE, probs, torch.Generator().manual_seed(5))
    last_input = inputs[:, -64:].transpose(1, 2).reshape(2, 8, 8, 8)
    assert torch.allclose(noisy, last_input + bits_to_codes(labels[-1]), atol=1e-6)
    assert not torch.allclose(noisy, clean, atol=1e-3)
    # Flipping the last scale too moves the sum by exactly one code step per flipped bit.
    both = flipped_summed_codes(f, SCHEDULE, [*probs[:3], 0.5], torch.Generator().manual_seed(5))
    steps = ((both - noisy).abs() * math.sqrt(8) / 2).round()
    assert set(steps.unique().tolist()) <= {0.0, 1.0} and 0 < steps.sum() < steps.numel()
    with pytest.raises(ValueError, match="one flip probability"):
        flipped_summed_codes(f, SCHEDULE, [0.1, 0.1])


def test_decoder_robustness_training_keeps_the_codes(tmp_path):
    base = BSQTokenizer(TINY)
    base.save_pretrained(tmp_path / "base")
    config = TokenizerTrainConfig(
        model=TINY,
        steps=4,
        lr=3e-3,
        init_from=str(tmp_path / "base"),
        train_encoder=False,
        code_flip_prob=0.3,
        log_every=2,
    )
    trainer = TokenizerTrainer(config, out_dir=tmp_path / "run")
    trainer.fit(_images(s) for s in range(10**6))
    tuned = BSQTokenizer.from_pretrained(tmp_path / "run" / "tokenizer")
    before, after = base.state_dict(), tuned.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("decoder.") for k in changed)
    x = _images(0)
    assert torch.equal(base.encode(x).bits[-1], tuned.encode(x).bits[-1])
    with pytest.raises(ValueError, match="decoder only"):
        TokenizerTrainConfig(model=TINY, code_flip_prob=0.2)
    with pytest.raises(ValueError, match="init_from"):
        TokenizerTrainConfig(model=TINY, train_encoder=False)
    with pytest.raises(ValueError, match="different architecture"):
        TokenizerTrainer(
            TokenizerTrainConfig(
                model=TokenizerConfig(**{**TINY.to_dict(), "codebook_dim": 6}), init_from=str(tmp_path / "base")
            ),
            out_dir=tmp_path / "other",
        )
