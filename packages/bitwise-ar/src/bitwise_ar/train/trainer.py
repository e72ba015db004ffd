"""The AR training loop (single process; :mod:`bitwise_ar.train.ray_entry` runs it on Ray Train workers).

One step (paper Sec. 3.3-3.4, reference §4-§5): images -> frozen tokenizer features F -> Bitwise Self-Correction
(``flip_and_requantize`` with per-scale flip rates uniform in [0, p]; rates 0 = teacher forcing) -> inputs and
re-quantised labels -> text features (frozen encoder, cached) with CFG dropout -> block-causal teacher-forcing
forward -> scale-reweighted bitwise cross-entropy -> AdamW (no-decay groups), warm-up + schedule, clipping,
accumulation.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from bsq_tokenizer.multiscale import flip_and_requantize, sample_flip_probs
from torch import nn

from bitwise_ar.config import PRESETS, InfinityConfig
from bitwise_ar.model import InfinityTransformer
from bitwise_ar.train.checkpoint import check_resumable, latest_checkpoint, load_checkpoint, save_checkpoint
from bitwise_ar.train.config import TrainConfig
from bitwise_ar.train.loss import bitwise_loss
from bitwise_ar.train.optim import build_optimizer, lr_at
from bitwise_ar.train.sources import build_source
from bitwise_ar.train.text import CachedTextEncoder, HashTextEncoder

logger = logging.getLogger(__name__)


def model_config(config: TrainConfig) -> InfinityConfig:
    """The architecture: the preset with ``model.overrides`` applied."""
    return PRESETS[config.model.preset].replace(**config.model.overrides)


def load_tokenizer(path: str, *, codebook_dim: int, seed: int = 0) -> Any:
    """The frozen tokenizer: a trained directory, or (``""``) a random debug tokenizer with ``codebook_dim`` bits."""
    from bsq_tokenizer import BSQTokenizer
    from bsq_tokenizer.config import PRESETS as TOKENIZER_PRESETS

    if path:
        tokenizer = BSQTokenizer.from_pretrained(path)
    else:
        import dataclasses

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tokenizer = BSQTokenizer(dataclasses.replace(TOKENIZER_PRESETS["debug"], codebook_dim=codebook_dim))
    return tokenizer.eval().requires_grad_(False)


def load_text_encoder(path: str, *, channels: int, max_length: int) -> Any:
    """The frozen text encoder: a T5 directory, or (``""``) word-hash features (tests)."""
    if not path:
        return HashTextEncoder(channels, max_len=max_length)
    from bitwise_ar.text_encoder import T5TextEncoder

    encoder = T5TextEncoder(path, max_length=max_length)
    if encoder.hidden_size != channels:
        raise ValueError(f"text encoder {path} has width {encoder.hidden_size} but the model expects text_channels={channels}")
    return encoder


def enable_activation_checkpointing(model: InfinityTransformer) -> None:
    """Recompute every block in the backward pass (full-block checkpointing, as the official recipe)."""
    from torch.utils.checkpoint import checkpoint

    for block in model.blocks:
        forward = block.forward
        block.forward = lambda *args, _f=forward, **kwargs: checkpoint(_f, *args, use_reentrant=False, **kwargs)


def init_from(model: InfinityTransformer, path: str) -> None:
    """Fine-tuning start: our checkpoint (``.pt``), a pipeline / transformer directory, or an official ``.pth``."""
    source = Path(path)
    if source.is_dir():
        directory = source / "transformer" if (source / "transformer").is_dir() else source
        state = InfinityTransformer.from_pretrained(directory).state_dict()
    elif source.suffix == ".pt" and source.is_file():
        state = load_checkpoint(source)["model"]
    elif source.is_file():
        from bitwise_ar.weights import load_official_state_dict

        state = load_official_state_dict(source)
    else:
        raise FileNotFoundError(f"model.init_from {path} not found (a training .pt, a pipeline directory or an official .pth)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "zero_k_bias" not in k]:
        raise ValueError(f"{path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


class ARTrainer:
    """Model, frozen tokenizer and text encoder, optimiser, data and step counter for one worker.

    Args:
        config: the run configuration.
        rank / world_size: this worker's place (data sharding, seeds); checkpoints are written by rank 0.
        device: where to train (default: CUDA if available).
        wrap: turns the model into its distributed form (DDP / FSDP), applied after loading weights.
        tracker: experiment tracker (rank 0 only).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device | None = None,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
        tracker: Any = None,
        checkpoint_hook: Callable[[Path, dict], None] | None = None,
    ) -> None:
        from bsq_tokenizer.train.tracking import Tracker

        self.config, self.rank, self.world_size = config, rank, world_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tracker = tracker if tracker is not None and rank == 0 else Tracker()
        self.checkpoint_hook = checkpoint_hook
        self.out_dir = Path(config.run.out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        seed = config.run.seed
        self.model_config = model_config(config)
        self.model = InfinityTransformer(self.model_config)
        self.model.init_weights(torch.Generator().manual_seed(seed))
        if config.model.init_from:
            init_from(self.model, config.model.init_from)
        self.model.to(self.device).train()
        if config.train.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        self.tokenizer = load_tokenizer(config.model.tokenizer, codebook_dim=self.model_config.tokenizer_codebook_dim, seed=seed)
        self.tokenizer.to(self.device)
        if self.tokenizer.config.token_dim != self.model_config.codebook_dim:
            raise ValueError(
                f"tokenizer gives {self.tokenizer.config.token_dim} bits per token but the model expects codebook_dim="
                f"{self.model_config.codebook_dim}"
            )
        self.text_encoder = CachedTextEncoder(
            load_text_encoder(config.model.text_encoder, channels=self.model_config.text_channels, max_length=self.model_config.text_maxlen)
        )
        self.source = build_source(config.data, rank=rank, world_size=world_size, stride=self.tokenizer.config.pad_multiple)
        self.optimizer = build_optimizer(self.model, config.optim)
        self.step = 0
        self.bsc_generator = torch.Generator().manual_seed(seed * 1000 + rank + 1)
        self.drop_generator = torch.Generator().manual_seed(seed * 1000 + rank + 7)
        self.cond_drop_rate = config.train.cond_drop_rate if config.train.cond_drop_rate >= 0 else self.model_config.cond_drop_rate
        self.resumed_from: Path | None = None
        latest = latest_checkpoint(self.checkpoint_dir)
        if latest is not None:
            self._resume(latest)
        self.train_model = wrap(self.model) if wrap is not None else self.model

    # ------------------------------------------------------------------ checkpoints
    def _rng_state(self) -> dict:
        return {"bsc": self.bsc_generator.get_state(), "drop": self.drop_generator.get_state(), "torch": torch.get_rng_state()}

    def checkpoint_payload(self) -> dict:
        """Everything needed to resume or to build a pipeline: weights, configs, optimiser, data position, RNG."""
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "model_config": self.model_config.to_dict(),
            "train_config": self.config.to_dict(),
            "sampler": {"image_size": list(self.source.image_size) if self.source.image_size else None,
                        "schedule": [list(s) for s in self.last_schedule] if getattr(self, "last_schedule", None) else None,
                        "tokenizer": self.config.model.tokenizer, "text_encoder": self.config.model.text_encoder},
            "optimizer": self.optimizer.state_dict(),
            "data": self.source.state_dict(),
            "rng": self._rng_state(),
        }

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0); returns its path."""
        if self.rank != 0:
            return None
        payload = self.checkpoint_payload()
        path = save_checkpoint(self.checkpoint_dir, self.step, payload, keep=self.config.run.keep_checkpoints)
        if self.checkpoint_hook is not None:
            self.checkpoint_hook(path, {"step": self.step})
        return path

    def _resume(self, path: Path) -> None:
        state = load_checkpoint(path)
        check_resumable(state["train_config"], self.config.to_dict(), path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.source.load_state_dict(state["data"])
        self.bsc_generator.set_state(state["rng"]["bsc"])
        self.drop_generator.set_state(state["rng"]["drop"])
        torch.set_rng_state(state["rng"]["torch"])
        self.step = int(state["step"])
        self.resumed_from = path
        logger.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ one step
    def _autocast(self) -> contextlib.AbstractContextManager:
        precision = self.config.train.precision
        if precision == "bf16" or (precision == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, images_B3HW: torch.Tensor, captions: list[str]) -> dict[str, Any]:
        """Tokenise and apply BSC: inputs (B, L-1, d), labels (B, L, d), schedule, text, CFG drop mask."""
        with torch.no_grad():
            features = self.tokenizer.encode_features(images_B3HW.to(self.device))
            schedule = self.tokenizer.default_schedule(*features.shape[-2:])
            if self.config.train.teacher_forcing or self.config.train.bsc_max_flip == 0:
                probs = [0.0] * len(schedule)
            else:
                probs = sample_flip_probs(len(schedule), self.config.train.bsc_max_flip, self.bsc_generator)
            inputs, labels = flip_and_requantize(features.float(), schedule, probs, self.bsc_generator)
            labels_BLd = torch.cat([b.flatten(1, 2) for b in labels], dim=1)
        text = self.text_encoder.encode(captions).to(self.device)
        drop = torch.rand(len(captions), generator=self.drop_generator) < self.cond_drop_rate
        self.last_schedule = schedule
        return {"inputs": inputs, "labels": labels_BLd, "schedule": schedule, "text": text, "drop": drop.to(self.device), "flip": probs}

    def forward_loss(self, prepared: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Teacher-forcing forward and the weighted bitwise loss."""
        with self._autocast():
            logits = self.train_model(
                prepared["text"], prepared["inputs"], prepared["schedule"],
                attention=self.config.train.attention, text_drop_B=prepared["drop"],
            )
        return bitwise_loss(
            logits.float(), prepared["labels"], prepared["schedule"],
            reweight=self.config.train.reweight_by_scale, label_smoothing=self.config.train.label_smoothing,
        )

    def train_step(self, micro_batches: list[tuple[torch.Tensor, list[str]]]) -> dict[str, float]:
        """One optimiser step over ``grad_accum`` micro-batches; returns averaged metrics and timings."""
        c = self.config
        lr = lr_at(self.step, c.train.steps, c.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        totals: dict[str, float] = {}
        timing = {"time/prepare_s": 0.0, "time/forward_s": 0.0, "time/backward_s": 0.0}
        for i, (images, captions) in enumerate(micro_batches):
            t0 = time.perf_counter()
            prepared = self.prepare(images, captions)
            t1 = time.perf_counter()
            sync = contextlib.nullcontext()
            if i < len(micro_batches) - 1 and hasattr(self.train_model, "no_sync"):
                sync = self.train_model.no_sync()
            with sync:
                loss, metrics = self.forward_loss(prepared)
                t2 = time.perf_counter()
                (loss / len(micro_batches)).backward()
            t3 = time.perf_counter()
            timing["time/prepare_s"] += t1 - t0
            timing["time/forward_s"] += t2 - t1
            timing["time/backward_s"] += t3 - t2
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + v / len(micro_batches)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.train_model.parameters(), c.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        tokens = sum(len(cap) for _, cap in micro_batches) * prepared["labels"].shape[1]
        out = {f"train/{k}" if "_s" not in k else f"scale/{k}": v for k, v in totals.items()}
        out.update(timing)
        out.update({"train/grad_norm": float(grad_norm), "train/lr": lr, "train/tokens": float(tokens)})
        return out

    # ------------------------------------------------------------------ visual check
    @torch.no_grad()
    def preview(self, images_B3HW: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """Rows: input images, tokenizer reconstructions, decoded teacher-forced bit predictions (no sampler)."""
        from bsq_tokenizer.multiscale import summed_codes_from_bits

        self.model.eval()
        prepared = self.prepare(images_B3HW[:8], captions[:8])
        with self._autocast():
            logits = self.model(prepared["text"], transformer_inputs_tf(self, images_B3HW[:8]), prepared["schedule"])
        B, L, _ = logits.shape
        d = self.model_config.codebook_dim
        if logits.shape[-1] == 2 * d:
            bits = logits.float().view(B, L, d, 2).argmax(-1)
        else:
            weights = 2 ** torch.arange(d - 1, -1, -1, device=logits.device)
            bits = (logits.argmax(-1).unsqueeze(-1) // weights) % 2
        per_scale, start = [], 0
        for h, w in prepared["schedule"]:
            per_scale.append(bits[:, start : start + h * w].reshape(B, h, w, d).to(torch.uint8))
            start += h * w
        predicted = self.tokenizer.decode_features(
            summed_codes_from_bits(per_scale, prepared["schedule"], scale=self.tokenizer.config.code_scale)
        )
        recon = self.tokenizer.decode_features(
            summed_codes_from_bits(
                [(prepared["labels"][:, s - h * w : s].reshape(B, h, w, d)) for (h, w), s in zip(prepared["schedule"], _ends(prepared["schedule"]), strict=True)],
                prepared["schedule"], scale=self.tokenizer.config.code_scale,
            )
        )
        self.model.train()
        return torch.cat((images_B3HW[:8].to(recon.device), recon, predicted))

    # ------------------------------------------------------------------ loop
    def fit(self, max_steps: int | None = None) -> dict[str, float]:
        """Train until ``train.steps`` (or ``max_steps`` more steps); returns the last metrics."""
        from bsq_tokenizer.train.tracking import flatten, image_grid
        from tqdm.auto import tqdm

        c = self.config
        if self.step == 0:
            self.tracker.log_params(flatten(c.to_dict()))
        stop = c.train.steps if max_steps is None else min(c.train.steps, self.step + max_steps)
        batches: Iterator = iter(self.source)
        metrics: dict[str, float] = {}
        progress = tqdm(total=c.train.steps, initial=self.step, desc="train", disable=self.rank != 0 or None)
        while self.step < stop:
            t0 = time.perf_counter()
            micro = [next(batches) for _ in range(c.optim.grad_accum)]
            data_s = time.perf_counter() - t0
            metrics = self.train_step(micro)
            metrics["time/data_s"] = data_s
            metrics["time/step_s"] = time.perf_counter() - t0
            metrics["train/tokens_per_s"] = metrics["train/tokens"] / metrics["time/step_s"]
            progress.update(1)
            if self.step % c.run.log_every == 0 or self.step == stop:
                self.tracker.log_metrics(metrics, self.step)
                logger.info("step %d loss %.4f acc_bit %.4f", self.step, metrics["train/loss"], metrics["train/acc_bit"])
            if c.run.image_every and self.rank == 0 and (self.step % c.run.image_every == 0 or self.step == stop):
                self.tracker.log_image(image_grid(self.preview(*micro[0])), "teacher_forced", self.step)
            if c.run.checkpoint_every and self.step % c.run.checkpoint_every == 0:
                self.save()
        progress.close()
        if c.run.checkpoint_every and self.step % c.run.checkpoint_every != 0:
            self.save()
        return metrics


def _ends(schedule: list[tuple[int, int]]) -> list[int]:
    out, total = [], 0
    for h, w in schedule:
        total += h * w
        out.append(total)
    return out


def transformer_inputs_tf(trainer: ARTrainer, images_B3HW: torch.Tensor) -> torch.Tensor:
    """Teacher-forcing (unflipped) transformer inputs of a batch, for previews."""
    from bsq_tokenizer.multiscale import flip_and_requantize

    features = trainer.tokenizer.encode_features(images_B3HW.to(trainer.device)).float()
    schedule = trainer.tokenizer.default_schedule(*features.shape[-2:])
    return flip_and_requantize(features, schedule, [0.0] * len(schedule))[0]
