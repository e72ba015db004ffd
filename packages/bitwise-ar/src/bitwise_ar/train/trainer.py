"""The AR training loop, on one process or as one rank of a data-parallel job (DDP or FSDP2).

One step (paper Sec. 3.3-3.4, reference §4-§5): images -> frozen tokenizer features F -> Bitwise Self-Correction
(``flip_and_requantize`` with per-scale flip rates uniform in [0, p]; rates 0 = teacher forcing) -> inputs and
re-quantised labels -> text features (frozen encoder, cached) with CFG dropout -> block-causal teacher-forcing
forward -> bitwise cross-entropy -> AdamW (no-decay groups), warm-up + schedule, clipping by the global norm,
accumulation.

Data parallelism. ``data.batch_size`` is the global batch; each of W ranks takes its slice. Every random draw of a
sample (its BSC flips, its CFG text dropout) comes from a generator seeded by the sample's key in the global stream,
the per-scale flip rates from ``(seed, step)``, and the global RNG is reseeded from ``(seed, step, rank)`` every step,
so 1 worker, W-worker DDP and W-worker FSDP compute the same losses and updates, and a run resumes exactly on any
number of workers. Metrics are means over ranks.

Validation (``[val]``, off by default): every ``val.every`` steps and at the last step, the loss on the first
``val.batches`` batches of a held-out source, teacher-forced in eval mode, summed over ranks and logged by rank 0 as
``val_loss/*`` at that step (:mod:`bitwise_ar.train.validation`, the same computation as ``infinity-eval val-loss``).

The model is built on the meta device and materialised tensor by tensor (from-scratch values, or ``model.init_from``
weights read lazily), after FSDP2 has sharded it, so no rank ever holds the full model in fp32 under FSDP. The
optimiser is built after sharding. Checkpoints are sharded (:mod:`infinity_run.checkpoint`): every rank writes its
shards, a checkpoint counts only when complete, and it reshards on load.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from bsq_tokenizer import BSQTokenizer
from bsq_tokenizer.config import PRESETS as TOKENIZER_PRESETS
from bsq_tokenizer.images import image_grid
from bsq_tokenizer.model_io import load_weights
from bsq_tokenizer.multiscale import flip_and_requantize, sample_flip_probs, summed_codes_from_bits
from bsq_tokenizer.quantizers import indices_to_bits
from infinity_run.checkpoint import Checkpointer, LocalCheckpointer, read_checkpoint, read_manifest
from infinity_run.distributed import fsdp_shard, global_mean, materialize_, mix_seed, rank_and_world
from infinity_run.tracking import CommittedTracker, Tracker, flatten
from torch import nn

from bitwise_ar.config import LORA_TARGETS, PRESETS, InfinityConfig
from bitwise_ar.lora import add_lora, save_adapter
from bitwise_ar.model import InfinityTransformer
from bitwise_ar.text_encoder import T5TextEncoder
from bitwise_ar.train.config import TrainConfig
from bitwise_ar.train.loss import bitwise_loss
from bitwise_ar.train.optim import build_optimizer, lr_at
from bitwise_ar.train.sources import build_source
from bitwise_ar.train.text import CachedTextEncoder, HashTextEncoder
from bitwise_ar.train.validation import EncodedBatch, encode_batch, validation_loss
from bitwise_ar.weights import check_state_dict, convert_official_state_dict, read_official_checkpoint

logger = logging.getLogger(__name__)

Strategy = Literal["none", "ddp", "fsdp"]
LORA_FSDP_ERROR = (
    "lora.rank > 0 cannot run with ray.strategy=fsdp; use ray.strategy=ddp (the frozen base is replicated, the "
    "adapters are small)"
)
CHECKPOINT_FORMAT_META = "bitwise-ar-train/2"
# Config entries that must match to resume: anything that changes shapes, data order or the objective, as
# (section, key, the value of a checkpoint written before the key existed).
RESUME_KEYS = (
    ("model", "preset", None),
    ("model", "overrides", None),
    ("data", "batch_size", None),
    ("data", "seed", None),
    ("data", "source", None),
    ("data", "options", {}),
    ("lora", "rank", 0),
    ("lora", "alpha", 16.0),
    ("lora", "targets", list(LORA_TARGETS)),
)


def model_config(config: TrainConfig) -> InfinityConfig:
    """The architecture: the preset with ``model.overrides`` applied."""
    return PRESETS[config.model.preset].replace(**config.model.overrides)


def load_tokenizer(path: str, *, codebook_dim: int, seed: int = 0) -> Any:
    """The frozen tokenizer: a trained directory, or (``""``) a random debug tokenizer with ``codebook_dim`` bits."""
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


# ---------------------------------------------------------------------------------------------------- init_from
def _is_training_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file()


def read_init_state(path: str | os.PathLike[str]) -> Mapping[str, torch.Tensor]:
    """The weights ``model.init_from`` names, in our key layout, read lazily where the format allows (mmap).

    Accepts a pipeline directory (``transformer/`` inside) or a transformer directory (``save_pretrained``), an
    official flat ``.pth``, an official training checkpoint (``['trainer']['gpt_fsdp']``), and the official 8B shard
    index (``model.safetensors.index.json`` or its directory). Training checkpoints of ours are loaded by
    :func:`build_model` directly into the shards.
    """
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(
            f"model.init_from {source} not found (a pipeline or transformer directory, a training checkpoint "
            "directory, an official .pth or the 8B shard index)"
        )
    if source.is_dir() and (source / "transformer").is_dir():
        source = source / "transformer"
    if source.is_dir() and (source / "config.json").is_file() and (source / "model.safetensors").is_file():
        return load_weights(source / "model.safetensors")
    return convert_official_state_dict(read_official_checkpoint(source))


def check_init_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """:func:`bitwise_ar.weights.check_state_dict` for ``model.init_from`` (``zero_k_bias`` buffers may be missing:
    they are zeros by definition)."""
    filled = dict(state)
    for name, buffer in model.named_buffers():
        if name.endswith("zero_k_bias"):
            filled.setdefault(name, buffer)
    check_state_dict(model, filled, f"model.init_from {source} (preset / model.overrides)")


def build_model(
    config: TrainConfig, *, device: torch.device, strategy: Strategy = "none"
) -> tuple[InfinityTransformer, nn.Module]:
    """``(model, train_model)``: the transformer, materialised on ``device`` tensor by tensor (sharded first under
    FSDP), with the from-scratch values of ``run.seed`` or the weights of ``model.init_from``; ``train_model`` is
    what the forward runs (the DDP wrapper, or the model itself)."""
    with torch.device("meta"):
        model = InfinityTransformer(model_config(config))
    if config.train.activation_checkpointing:
        enable_activation_checkpointing(model)
    if strategy == "fsdp":
        mixed = device.type == "cuda" and config.train.precision != "fp32"
        fsdp_shard(model, model.blocks, mixed_precision=mixed)
    seed, source = config.run.seed, config.model.init_from
    state: Mapping[str, torch.Tensor] = {}
    if source and not _is_training_checkpoint(Path(source)):
        state = read_init_state(source)
        check_init_state(model, state, source)

    def value_of(name: str, tensor: torch.Tensor) -> torch.Tensor:
        return state[name] if name in state else model.initial_value(name, seed)

    materialize_(model, device, value_of)
    if source and _is_training_checkpoint(Path(source)):
        read_checkpoint(source, model)  # reshards into this run's layout
    if config.lora.enabled:
        if strategy == "fsdp":
            raise ValueError(LORA_FSDP_ERROR)
        add_lora(model, config.lora, seed=mix_seed(seed, 5))  # the base is frozen; only the adapters train
    model.train()
    train_model: nn.Module = model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=ids)
    return model, train_model


class ARTrainer:
    """Model, frozen tokenizer and text encoder, optimiser, data and step counter for one rank.

    Args:
        config: the run configuration.
        device: where to train (default: CUDA if available).
        strategy: "none" (one process), "ddp" or "fsdp"; default "none" alone and "ddp" in a process group.
        tracker: experiment tracker (used on rank 0 only), wrapped in a :class:`CommittedTracker`: metrics and images
            reach it when the checkpoint covering their step is written (or at once when checkpoints are off), so a
            restarted run never logs a step twice.
        checkpointer: where checkpoints are written and resumed from (default ``run.out_dir/checkpoints``).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        device: str | torch.device | None = None,
        strategy: Strategy | None = None,
        tracker: Tracker | None = None,
        checkpointer: Checkpointer | None = None,
    ) -> None:
        self.config = config
        self.rank, self.world_size = rank_and_world()
        self.strategy: Strategy = strategy or ("ddp" if self.world_size > 1 else "none")
        if self.strategy != "none" and self.world_size == 1 and not torch.distributed.is_initialized():
            raise ValueError(f"strategy {self.strategy!r} needs a process group (run it on Ray Train or torchrun)")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tracker = CommittedTracker(tracker if tracker is not None and self.rank == 0 else Tracker())
        self.out_dir = Path(config.run.out_dir)
        self.checkpointer = checkpointer or LocalCheckpointer(self.out_dir / "checkpoints", keep=config.run.keep_checkpoints)
        seed = config.run.seed
        per_worker = config.per_worker_batch(self.world_size)
        self.model_config = model_config(config)
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
        self.source = build_source(
            config.data, rank=self.rank, world_size=self.world_size, batch_size=per_worker,
            stride=self.tokenizer.config.pad_multiple,
        )
        self.val_source = None
        if config.val.enabled:
            self.val_source = build_source(
                config.val, rank=self.rank, world_size=self.world_size, batch_size=config.per_worker_val_batch(self.world_size),
                stride=self.tokenizer.config.pad_multiple, section="val",
            )
            self.val_start = self.val_source.state_dict()
        self._val_encoded: list[EncodedBatch] | None = None
        self.model, self.train_model = build_model(config, device=self.device, strategy=self.strategy)
        self.optimizer = build_optimizer(self.model, config.optim)
        self.step = 0
        self.cond_drop_rate = config.train.cond_drop_rate if config.train.cond_drop_rate >= 0 else self.model_config.cond_drop_rate
        self.resumed_from: Path | None = None
        self.last_schedule: list[tuple[int, int]] | None = None
        latest = self.checkpointer.latest()
        if latest is not None:
            self._resume(latest)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_meta(self) -> dict[str, Any]:
        """What a checkpoint carries besides tensors: configs (to export or resume it), data position, sampler hints."""
        return {
            "kind": CHECKPOINT_FORMAT_META,
            "model_config": self.model_config.to_dict(),
            "train_config": self.config.to_dict(),
            "sampler": {
                "image_size": list(self.source.image_size) if self.source.image_size else None,
                "schedule": [list(s) for s in self.last_schedule] if self.last_schedule else None,
                "tokenizer": self.config.model.tokenizer,
                "text_encoder": self.config.model.text_encoder,
            },
            "data": self.source.state_dict(),
        }

    def save(self) -> Path | None:
        """Write a checkpoint of this step (collective: every rank calls it), then hand the metrics and images of
        the steps it covers to the tracker. Returns its directory (None where Ray keeps it)."""
        pending = self.tracker.pending
        path = self.checkpointer.save(
            self.step, self.train_model, self.optimizer, meta=self.checkpoint_meta(),
            rank_state={"torch_rng": torch.get_rng_state()},
            metrics={"step": self.step, **(pending[-1][1] if pending else {})},
        )
        self.tracker.commit()
        return path

    def _resume(self, path: Path) -> None:
        check_resumable(read_manifest(path)["meta"].get("train_config", {}), self.config.to_dict(), path)
        manifest, rank_state = read_checkpoint(path, self.train_model, self.optimizer)
        meta = manifest["meta"]
        self.source.load_state_dict(meta["data"])
        if rank_state is not None:
            torch.set_rng_state(rank_state["torch_rng"])
        self.step = int(manifest["step"])
        self.resumed_from = path
        logger.info("resumed from %s at step %d (written by %d workers)", path, self.step, manifest["world_size"])

    # ------------------------------------------------------------------ one step
    def _autocast(self) -> contextlib.AbstractContextManager:
        precision = self.config.train.precision
        if self.strategy == "fsdp" and self.device.type == "cuda":
            return contextlib.nullcontext()  # FSDP's MixedPrecisionPolicy computes in bf16 already
        if precision == "bf16" or (precision == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(
        self, images_B3HW: torch.Tensor, captions: list[str], keys: list[int] | None = None, *, micro: int = 0
    ) -> dict[str, Any]:
        """Tokenise and apply BSC: inputs (B, L-1, d), labels (B, L, d), schedule, text, CFG drop mask.

        ``keys`` (the samples' places in the global stream) seed each sample's flips and text dropout; the per-scale
        flip rates come from ``(seed, step, micro)``, shared by every rank."""
        seed = self.config.run.seed
        keys = list(keys) if keys is not None else [self.step * len(captions) + i for i in range(len(captions))]
        with torch.no_grad():
            features = self.tokenizer.encode_features(images_B3HW.to(self.device))
            schedule = self.tokenizer.default_schedule(*features.shape[-2:])
            if self.config.train.teacher_forcing or self.config.train.bsc_max_flip == 0:
                probs = [0.0] * len(schedule)
            else:
                rates = torch.Generator().manual_seed(mix_seed(seed, self.step, micro, 1))
                probs = sample_flip_probs(len(schedule), self.config.train.bsc_max_flip, rates)
            flips = [torch.Generator().manual_seed(mix_seed(seed, k, 2)) for k in keys]
            inputs, labels = flip_and_requantize(features.float(), schedule, probs, flips)
            labels_BLd = torch.cat([b.flatten(1, 2) for b in labels], dim=1)
        text = self.text_encoder.encode(captions).to(self.device)
        draws = torch.tensor([float(torch.rand(1, generator=torch.Generator().manual_seed(mix_seed(seed, k, 3)))) for k in keys])
        drop = draws < self.cond_drop_rate
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

    def _gradient_sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce / reduce-scatter on inner accumulation micro-steps."""
        if self.strategy == "ddp" and not enabled:
            return self.train_model.no_sync()
        if self.strategy == "fsdp":
            self.model.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()

    def train_step(self, micro_batches: list[tuple]) -> dict[str, float]:
        """One optimiser step over ``grad_accum`` micro-batches; returns this rank's averaged metrics and timings."""
        c = self.config
        torch.manual_seed(mix_seed(c.run.seed, self.step, self.rank, 4))  # stateless: resumes exactly on any world size
        lr = lr_at(self.step, c.train.steps, c.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        totals: dict[str, float] = {}
        timing = {"time/prepare_s": 0.0, "time/forward_s": 0.0, "time/backward_s": 0.0}
        for i, batch in enumerate(micro_batches):
            t0 = time.perf_counter()
            prepared = self.prepare(*batch, micro=i)
            t1 = time.perf_counter()
            with self._gradient_sync(i == len(micro_batches) - 1):
                loss, metrics = self.forward_loss(prepared)
                t2 = time.perf_counter()
                (loss / len(micro_batches)).backward()
            t3 = time.perf_counter()
            timing["time/prepare_s"] += t1 - t0
            timing["time/forward_s"] += t2 - t1
            timing["time/backward_s"] += t3 - t2
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + v / len(micro_batches)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.optim.grad_clip)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP: the norm over all shards
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        tokens = sum(len(batch[1]) for batch in micro_batches) * prepared["labels"].shape[1] * self.world_size
        out = {f"train/{k}" if "_s" not in k else f"scale/{k}": v for k, v in totals.items()}
        out.update(timing)
        out.update({"train/grad_norm": float(grad_norm), "train/lr": lr, "train/tokens": float(tokens)})
        return out

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """The validation loss of ``[val]`` now (collective: every rank calls it): the first ``val.batches`` global
        batches of the held-out source, teacher-forced in eval mode, summed over ranks (:mod:`bitwise_ar.train.validation`)."""
        if self.val_source is None:
            raise ValueError("val.source is not set: there is no held-out data to validate on")
        if self._val_encoded is None:
            # the same batches every time, through encoders that do not train: encoded once and kept in host memory
            # (a large [val] set must not hold accelerator memory; validation_loss moves each batch back)
            self.val_source.load_state_dict(self.val_start)
            held_out = itertools.islice(iter(self.val_source), self.config.val.batches)
            self._val_encoded = [encode_batch(self.tokenizer, self.text_encoder, images, captions, self.device).to("cpu")
                                 for images, captions, _ in held_out]  # fmt: skip
        training = self.model.training
        self.model.eval()
        try:
            acc = validation_loss(self.model, self.tokenizer, self.text_encoder, self._val_encoded, device=self.device,
                                  autocast=self._autocast)  # fmt: skip
        finally:
            self.model.train(training)
        return acc.all_reduce_(self.device).metrics()

    # ------------------------------------------------------------------ visual check
    @torch.no_grad()
    def preview(self, images_B3HW: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """Rows: input images, tokenizer reconstructions, decoded teacher-forced bit predictions (no sampler)."""
        self.model.eval()
        prepared = self.prepare(images_B3HW[:8], captions[:8])
        with self._autocast():
            logits = self.model(prepared["text"], transformer_inputs_tf(self, images_B3HW[:8]), prepared["schedule"])
        logits = logits.float()
        B, L, _ = logits.shape
        d = self.model_config.codebook_dim
        if logits.shape[-1] == 2 * d:
            bits = logits.float().view(B, L, d, 2).argmax(-1)
        else:
            bits = indices_to_bits(logits.argmax(-1), d, check_range=False)
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
    def fit(self, max_steps: int | None = None, *, on_step: Callable[[int], None] | None = None) -> dict[str, float]:
        """Train until ``train.steps`` (or ``max_steps`` more steps); returns the last metrics (means over ranks).
        Every rank must call it (the steps are collective). ``on_step(step)`` runs after each step."""
        from tqdm.auto import tqdm

        c = self.config
        self.tracker.log_params(flatten(c.to_dict()), step=self.step)
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
                metrics = global_mean(metrics, self.device)
                self.tracker.log_metrics(metrics, self.step)
                logger.info("step %d loss %.4f acc_bit %.4f", self.step, metrics["train/loss"], metrics["train/acc_bit"])
            if c.val.enabled and (self.step % c.val.every == 0 or self.step == c.train.steps):
                val = self.validate()
                self.tracker.log_metrics(val, self.step)
                logger.info("step %d val_loss %.4f", self.step, val["val_loss/bit_ce"])
            if c.run.image_every and (self.step % c.run.image_every == 0 or self.step == stop):
                grid = image_grid(self.preview(*micro[0][:2]))  # collective under FSDP: every rank runs it
                self.tracker.log_image(grid, "teacher_forced", self.step)
            if c.run.checkpoint_every and self.step % c.run.checkpoint_every == 0:
                self.save()
            elif not c.run.checkpoint_every:
                self.tracker.commit()
            if on_step is not None:
                on_step(self.step)
        progress.close()
        if c.run.checkpoint_every and self.step % c.run.checkpoint_every != 0:
            self.save()
        if c.lora.enabled and self.rank == 0:
            self.tracker.log_artifact(self.save_adapter(self.out_dir / "lora"), "lora")
        self.tracker.commit()
        return metrics

    def save_adapter(self, directory: str | os.PathLike[str]) -> Path:
        """Write the LoRA adapter of this run (``lora.rank > 0``) with :func:`bitwise_ar.lora.save_adapter`; its
        metadata records the base model (``model.init_from``) and the step."""
        return save_adapter(self.model, directory, extra=adapter_meta(self.config, self.step))


def check_resumable(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Refuse to resume with a config that changes the model or the data order (lists what differs)."""
    diffs = []
    for section, key, default in RESUME_KEYS:
        a, b = saved.get(section, {}).get(key, default), current.get(section, {}).get(key, default)
        if a != b:
            diffs.append(f"{section}.{key}: checkpoint {a!r} vs config {b!r}")
    if diffs:
        raise ValueError(
            f"cannot resume from {path} with an incompatible config ({'; '.join(diffs)}); use the original settings or a "
            "new run.out_dir (to fine-tune from it instead, set model.init_from)"
        )


def adapter_meta(config: TrainConfig, step: int) -> dict[str, Any]:
    """What an adapter directory records of its training run besides the base fingerprint."""
    return {"init_from": config.model.init_from, "preset": config.model.preset, "step": int(step)}


def _ends(schedule: list[tuple[int, int]]) -> list[int]:
    out, total = [], 0
    for h, w in schedule:
        total += h * w
        out.append(total)
    return out


def transformer_inputs_tf(trainer: ARTrainer, images_B3HW: torch.Tensor) -> torch.Tensor:
    """Teacher-forcing (unflipped) transformer inputs of a batch, for previews."""
    features = trainer.tokenizer.encode_features(images_B3HW.to(trainer.device)).float()
    schedule = trainer.tokenizer.default_schedule(*features.shape[-2:])
    return flip_and_requantize(features, schedule, [0.0] * len(schedule))[0]
