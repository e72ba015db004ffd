"""Tokenizer training loop: L1 (+ LPIPS-style perceptual, + PatchGAN hinge) + per-scale BSQ commitment/entropy.

One process, or one rank of a data-parallel job (gradients averaged over the ranks); the caller provides an
iterator of image batches ``(B, 3, H, W)`` in [-1, 1] (H, W multiples of the stride), or ``(images, keys)`` pairs
from :class:`bsq_tokenizer.train.data.ImageSource`. The loss weights default to the effective BitVAE recipe
(reference §3): ``L = l1 * |x - x_hat| + perceptual * LPIPS + gan * G_hinge + mean_k(commitment * commit_k +
entropy * H_k)``. Checkpoints are sharded directories (:mod:`infinity_run.checkpoint`: ``out_dir/checkpoints/
step_XXXXXXX``, or Ray's storage) with the model, discriminator, optimisers, step, data position and RNG; random
draws are seeded from ``(seed, step)``, so a run resumes exactly. The final model is ``save_pretrained`` to
``out_dir/tokenizer``. Entry point: ``python -m bsq_tokenizer.train CONFIG.toml [overrides] [--ray]``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from infinity_run.checkpoint import Checkpointer, LocalCheckpointer, read_checkpoint, read_manifest
from infinity_run.distributed import average_gradients_, global_mean, mix_seed, rank_and_world
from infinity_run.tracking import CommittedTracker, Tracker, flatten
from torch import nn

from bsq_tokenizer.config import PRESETS, TokenizerConfig
from bsq_tokenizer.images import image_grid
from bsq_tokenizer.model import BSQTokenizer
from bsq_tokenizer.multiscale import flipped_summed_codes, sample_flip_probs
from bsq_tokenizer.train.perceptual import PatchDiscriminator, PerceptualLoss, hinge_d_loss, hinge_g_loss
from bsq_tokenizer.train.quantize import quantize_for_training

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TokenizerTrainConfig:
    """Run settings of tokenizer training (the architecture is ``model``)."""

    model: TokenizerConfig = field(default_factory=lambda: PRESETS["debug"])
    steps: int = 1000
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    l1_weight: float = 1.0
    l2_weight: float = 0.0
    perceptual_weight: float = 0.0
    perceptual_backbone: str | None = None
    perceptual_heads: str | None = None
    gan_weight: float = 0.0
    gan_start_step: int = 0
    discriminator_channels: int = 64
    discriminator_lr_mult: float = 2.0
    commitment_weight: float = 1.0
    entropy_weight: float = 0.004
    inv_temperature: float = 100.0
    scale_drop_prob: float = 0.5
    #: start from this tokenizer directory (``save_pretrained`` layout) instead of random weights
    init_from: str | None = None
    #: False: freeze the encoder (the bit codes stay exactly those of ``init_from``) and train the decoder only
    train_encoder: bool = True
    #: > 0: decoder robustness training. Every scale's bits are flipped with a rate drawn uniformly from
    #: {0, 0.01, ..., code_flip_prob} (later scales re-quantise against the flips, as in Bitwise Self-Correction) and
    #: the decoder must still reproduce the clean image, so a sampler's bit errors decode to clean pictures.
    #: Needs ``train_encoder=False`` (the codes are computed without gradients).
    code_flip_prob: float = 0.0
    seed: int = 0
    log_every: int = 10
    image_every: int = 0
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in (
            "l1_weight",
            "l2_weight",
            "perceptual_weight",
            "gan_weight",
            "commitment_weight",
            "entropy_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.l1_weight + self.l2_weight + self.perceptual_weight == 0:
            raise ValueError("no reconstruction loss: set l1_weight, l2_weight or perceptual_weight > 0")
        if self.perceptual_weight > 0 and self.perceptual_backbone is None:
            logger.warning("perceptual loss with a RANDOM backbone (perceptual_backbone unset): only useful for tests")
        if not 0.0 <= self.scale_drop_prob < 1.0:
            raise ValueError(f"scale_drop_prob must be in [0, 1), got {self.scale_drop_prob}")
        if not 0.0 <= self.code_flip_prob <= 0.5:
            raise ValueError(f"code_flip_prob must be in [0, 0.5], got {self.code_flip_prob}")
        if self.code_flip_prob > 0 and self.train_encoder:
            raise ValueError("code_flip_prob > 0 trains the decoder only: set train_encoder=False (and init_from)")
        if not self.train_encoder and self.init_from is None:
            raise ValueError("train_encoder=False freezes a random encoder: set init_from to a trained tokenizer")

    def to_dict(self) -> dict:
        """JSON-ready dict (nested model config)."""
        out = dataclasses.asdict(self)
        out["model"] = self.model.to_dict()
        out["betas"] = list(self.betas)
        return out


class TokenizerTrainer:
    """Owns the model, losses, optimisers and step counter; :meth:`fit` runs the loop.

    Args:
        config: the loop's settings.
        out_dir: where the final ``tokenizer/`` goes (and, by default, ``checkpoints/``).
        tracker: experiment tracker (rank 0 only); metrics and images reach it when their checkpoint is written.
        checkpointer: where checkpoints go (default ``out_dir/checkpoints``, keeping ``keep``).
        source: the data (an :class:`~bsq_tokenizer.train.data.ImageSource`): its position is checkpointed and
            :meth:`fit` reads it when given no batches.
        device: where to train (default CPU).
    """

    def __init__(
        self,
        config: TokenizerTrainConfig,
        *,
        out_dir: str | Path,
        tracker: Tracker | None = None,
        checkpointer: Checkpointer | None = None,
        source: Any = None,
        device: str | torch.device | None = None,
        keep: int = 2,
    ) -> None:
        self.config = config
        self.rank, self.world_size = rank_and_world()
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device or "cpu")
        self.tracker = CommittedTracker(tracker if tracker is not None and self.rank == 0 else Tracker())
        self.checkpointer = checkpointer or LocalCheckpointer(self.out_dir / "checkpoints", keep=keep)
        self.source = source
        self.generator = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)
        self.model = BSQTokenizer(config.model).train()
        if config.init_from is not None:
            start = BSQTokenizer.from_pretrained(config.init_from)
            if start.config.to_dict() != config.model.to_dict():
                raise ValueError(
                    f"init_from={config.init_from} has a different architecture than the configured model; "
                    f"saved: {start.config.to_dict()}"
                )
            self.model.load_state_dict(start.state_dict())
        if not config.train_encoder:
            for name, param in self.model.named_parameters():
                if not name.startswith("decoder."):
                    param.requires_grad_(False)
        self.perceptual = (
            PerceptualLoss(config.perceptual_backbone, config.perceptual_heads, width=0.125, generator=self.generator)
            if config.perceptual_weight > 0
            else None
        )
        self.discriminator = (
            PatchDiscriminator(channels=config.discriminator_channels) if config.gan_weight > 0 else None
        )
        self.model.to(self.device)
        if self.perceptual is not None:
            self.perceptual.to(self.device)
        modules = {"tokenizer": self.model}
        if self.discriminator is not None:
            modules["discriminator"] = self.discriminator.to(self.device)
        self.modules = nn.ModuleDict(modules)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
        )
        self.d_optimizer = (
            torch.optim.AdamW(
                self.discriminator.parameters(), lr=config.lr * config.discriminator_lr_mult, betas=config.betas
            )
            if self.discriminator is not None
            else None
        )
        self.step = 0
        self.resumed_from: Path | None = None
        latest = self.checkpointer.latest()
        if latest is not None:
            self._resume(latest)

    # ------------------------------------------------------------------ checkpoints
    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.optimizer, self.d_optimizer) if o is not None]

    def save_checkpoint(self) -> Path | None:
        """Write model, discriminator, optimisers, step, data position and RNG (collective), then hand the pending
        metrics and images to the tracker. Returns the checkpoint directory (None where Ray keeps it)."""
        pending = self.tracker.pending
        path = self.checkpointer.save(
            self.step, self.modules, self.optimizers,
            meta={"kind": "bsq-tokenizer-train/2", "config": self.config.to_dict(),
                  "data": self.source.state_dict() if self.source is not None else None},
            rank_state={"torch_rng": torch.get_rng_state()},
            metrics={"step": self.step, **(pending[-1][1] if pending else {})},
        )  # fmt: skip
        self.tracker.commit()
        return path

    def _resume(self, path: Path) -> None:
        saved = read_manifest(path)["meta"].get("config", {})
        if saved.get("model") != self.config.model.to_dict():
            raise ValueError(
                f"{path} was written for a different tokenizer architecture; use a fresh out_dir or the same "
                f"model config (saved: {saved.get('model')})"
            )
        manifest, rank_state = read_checkpoint(path, self.modules, self.optimizers)
        if self.source is not None and manifest["meta"].get("data"):
            self.source.load_state_dict(manifest["meta"]["data"])
        if rank_state is not None:
            torch.set_rng_state(rank_state["torch_rng"])
        self.step = int(manifest["step"])
        self.resumed_from = path
        logger.info("resumed tokenizer training from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ one step
    def _lr(self) -> float:
        warm = self.config.warmup_steps
        return self.config.lr * min(1.0, (self.step + 1) / warm) if warm else self.config.lr

    def train_step(self, images_B3HW: torch.Tensor) -> dict[str, float]:
        """One optimisation step (gradients averaged over the ranks); returns this rank's metrics."""
        c = self.config
        self.generator.manual_seed(mix_seed(c.seed, self.step))  # shared by the ranks: same scale dropout / flips
        torch.manual_seed(mix_seed(c.seed, self.step, self.rank))
        images_B3HW = images_B3HW.to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        metrics: dict[str, float] = {}
        if c.train_encoder:
            features = self.model.encode_features(images_B3HW)
            schedule = self.model.default_schedule(*features.shape[-2:])
            q = quantize_for_training(
                features,
                schedule,
                drop_prob=c.scale_drop_prob,
                generator=self.generator,
                inv_temperature=c.inv_temperature,
            )
            recon = self.model.decoder(q.summed_BdHW)
            loss = q.mean_loss(c.commitment_weight, c.entropy_weight)
        else:
            q = None
            with torch.no_grad():
                features = self.model.encode_features(images_B3HW)
                schedule = self.model.default_schedule(*features.shape[-2:])
                probs = (
                    sample_flip_probs(len(schedule), c.code_flip_prob, self.generator)
                    if c.code_flip_prob > 0
                    else [0.0] * len(schedule)
                )
                summed = flipped_summed_codes(
                    features, schedule, probs, self.generator, scale=self.model.config.code_scale
                )
            recon = self.model.decoder(summed)
            loss = recon.new_zeros(())
        l1 = (recon - images_B3HW).abs().mean()
        metrics["loss/l1"] = float(l1.detach())
        loss = loss + c.l1_weight * l1
        if c.l2_weight:
            l2 = F.mse_loss(recon, images_B3HW)
            loss = loss + c.l2_weight * l2
            metrics["loss/l2"] = float(l2.detach())
        if self.perceptual is not None:
            p = self.perceptual(recon, images_B3HW)
            loss = loss + c.perceptual_weight * p
            metrics["loss/perceptual"] = float(p.detach())
        use_gan = self.discriminator is not None and self.step >= c.gan_start_step
        if use_gan:
            self.discriminator.requires_grad_(False)
            g = hinge_g_loss(self.discriminator(recon))
            self.discriminator.requires_grad_(True)
            loss = loss + c.gan_weight * g
            metrics["loss/gan_g"] = float(g.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients_(p for p in self.model.parameters() if p.requires_grad)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.optimizer.step()
        if use_gan:
            d = hinge_d_loss(self.discriminator(images_B3HW), self.discriminator(recon.detach()))
            self.d_optimizer.zero_grad(set_to_none=True)
            d.backward()
            average_gradients_(self.discriminator.parameters())
            torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), c.grad_clip)
            self.d_optimizer.step()
            metrics["loss/gan_d"] = float(d.detach())
        for k, (commit, ent) in enumerate(zip(q.commitment, q.entropy, strict=True) if q is not None else ()):
            if commit is not None:
                metrics[f"scale/commitment_s{k:02d}"] = float(commit.detach())
                metrics[f"scale/entropy_s{k:02d}"] = float(ent.detach())
        metrics["loss/total"] = float(loss.detach())
        metrics["grad_norm"] = float(grad_norm)
        metrics["lr"] = self._lr()
        with torch.no_grad():
            mse = F.mse_loss(recon.clamp(-1, 1), images_B3HW)
            metrics["psnr"] = float(10 * torch.log10(4.0 / mse.clamp_min(1e-10)))
        self.step += 1
        self._last_recon = (images_B3HW[:8].detach(), recon[:8].detach())
        return metrics

    # ------------------------------------------------------------------ loop
    def fit(self, batches: Iterable[Any] | None = None, *, on_step: Any = None) -> BSQTokenizer:
        """Train until ``config.steps``; returns the model (also saved to ``out_dir/tokenizer`` by rank 0).

        ``batches``: image tensors or ``(images, keys)`` pairs (default: the trainer's ``source``). Every rank must
        call it. ``on_step(step)`` runs after each step."""
        from tqdm.auto import tqdm

        c = self.config
        self.tracker.log_params(flatten(c.to_dict()), step=self.step)
        if batches is None:
            if self.source is None:
                raise ValueError("fit() needs batches, or a trainer built with a source")
            batches = self.source
        iterator: Iterator[Any] = iter(batches)
        progress = tqdm(total=c.steps, initial=self.step, desc="tokenizer", disable=self.rank != 0 or None)
        start = time.perf_counter()
        while self.step < c.steps:
            try:
                batch = next(iterator)
            except StopIteration:
                raise ValueError(f"the data ran out after {self.step} steps; provide an endless iterator") from None
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            metrics = self.train_step(images)
            progress.update(1)
            if self.step % c.log_every == 0 or self.step == c.steps:
                metrics["time/step_s"] = (time.perf_counter() - start) / max(1, c.log_every)
                start = time.perf_counter()
                metrics = global_mean(metrics)
                self.tracker.log_metrics(metrics, self.step)
                progress.set_postfix(l1=f"{metrics['loss/l1']:.4f}", psnr=f"{metrics['psnr']:.1f}")
                logger.info("step %d l1 %.4f psnr %.2f", self.step, metrics["loss/l1"], metrics["psnr"])
            if c.image_every and (self.step % c.image_every == 0 or self.step == c.steps):
                real, fake = self._last_recon
                self.tracker.log_image(image_grid(torch.cat((real, fake.clamp(-1, 1)))), "reconstruction", self.step)
            if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                self.save_checkpoint()
            elif not c.checkpoint_every:
                self.tracker.commit()
            if on_step is not None:
                on_step(self.step)
        progress.close()
        if not c.checkpoint_every or self.step % c.checkpoint_every:
            self.save_checkpoint()
        self.model.eval()
        if self.rank == 0:
            final = self.model.save_pretrained(self.out_dir / "tokenizer")
            self.tracker.log_artifact(final, "tokenizer")
        return self.model
