"""The Infinity transformer: text conditioning, scale embedding, shared-AdaLN blocks, bitwise head.

Module and parameter names equal the official ones (``cfg_uncond``, ``text_proj_for_sos.ca.mat_q``, ...) except that
blocks are a flat ``blocks.{i}`` list instead of the official ``block_chunks.{c}.module.{j}`` grouping; the weight
converter (:mod:`bitwise_ar.weights`) maps between the two.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from bsq_tokenizer.model_io import load_weights
from torch import nn

from bitwise_ar.config import InfinityConfig, get_preset
from bitwise_ar.layout import ScaleLayout
from bitwise_ar.model.attention import (
    ChunkedAttention,
    FlexBlockCausalAttention,
    MaskedAttention,
    SelfAttentionContext,
    TextMemory,
)
from bitwise_ar.model.attention_backend import (
    AttentionBackend,
    AttentionKernel,
    FlashAttention,
    pack_text_kv,
    resolve_attention_backend,
    sdpa_attention,
)
from bitwise_ar.model.blocks import InfinityBlock
from bitwise_ar.model.head import AdaLNBeforeHead
from bitwise_ar.model.state_dict import (
    WEIGHTS_FILE,
    build_strict,
    convert_official_state_dict,
    infer_config,
    read_config,
    read_official_checkpoint,
    save_pretrained,
)
from bitwise_ar.model.text import PackedText, RMSNorm, TextAttentivePool

TrainingAttention = Literal["sdpa", "chunked", "flex"]


@dataclass
class Condition:
    """Everything the blocks need from the text: pooled condition, AdaLN modulation, cross-attention memory."""

    cond_BD: torch.Tensor
    ada_B16C: torch.Tensor
    text: TextMemory

    @property
    def batch_size(self) -> int:
        return self.cond_BD.shape[0]


class InfinityTransformer(nn.Module):
    """Next-scale bitwise autoregressive transformer (paper Sec. 3).

    ``forward`` is the teacher-forcing (training) pass over all scales packed in one sequence with block-causal
    attention; :mod:`bitwise_ar.sampling` drives the KV-cached inference with the lower-level methods
    (:meth:`condition`, :meth:`embed_scale`, :meth:`run_blocks`, :meth:`logits`).
    """

    def __init__(self, config: InfinityConfig) -> None:
        super().__init__()
        self.config = config
        C, D, Ct = config.embed_dim, config.cond_dim, config.text_channels
        self.cfg_uncond = nn.Parameter(torch.zeros(config.text_maxlen, Ct))
        self.pos_start = nn.Parameter(torch.zeros(1, 1, C))
        self.text_norm = RMSNorm(Ct, eps=config.norm_eps)
        self.text_proj_for_sos = TextAttentivePool(Ct, D, config.text_pool_num_heads)
        self.text_proj_for_ca = nn.Sequential(nn.Linear(Ct, D), nn.GELU(approximate="tanh"), nn.Linear(D, D))
        self.lvl_embed = nn.Embedding(config.num_level_embeddings, C)
        self.word_embed = nn.Linear(config.codebook_dim, C)
        self.shared_ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * C))
        # stochastic depth grows linearly from 0 at the first block to drop_path_rate at the last
        rates = [config.drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.ModuleList(
            InfinityBlock(C, config.num_heads, config.ffn_hidden, config.norm_eps, rate) for rate in rates
        )
        self.head_nm = AdaLNBeforeHead(C, D, config.norm_eps)
        self.head = nn.Linear(C, config.num_logits)
        self._attention_backend, self._attention_kernel = "sdpa", sdpa_attention

    # ------------------------------------------------------------------ attention kernel
    def set_attention_backend(self, backend: AttentionBackend) -> InfinityTransformer:
        """Choose the kernel of the mask-free self-attention paths: "sdpa" (default), "flash" or "auto".

        "flash" needs flash-attn (``pip install 'bitwise-ar[flash]' && pip install flash-attn --no-build-isolation``;
        ImportError otherwise), CUDA and fp16/bf16 blocks; "auto" uses flash-attn where it can and SDPA elsewhere.
        It applies to KV-cached sampling, the recompute mode and ``attention="chunked"`` training, and to the text
        cross-attention at inference (flash-attn's varlen kernel on the packed prompts); the masked SDPA training
        path uses SDPA. See :mod:`bitwise_ar.model.attention_backend`. Returns ``self``.
        """
        self._attention_backend, self._attention_kernel = resolve_attention_backend(backend)
        return self

    @property
    def attention_backend(self) -> str:
        """The effective backend: "sdpa" or "flash" ("auto" resolves to one of them)."""
        return self._attention_backend

    @property
    def attention_kernel(self) -> AttentionKernel:
        return self._attention_kernel

    # ------------------------------------------------------------------ text
    def null_text(self, lengths: Sequence[int]) -> PackedText:
        """The learned unconditional text for CFG: rows ``cfg_uncond[:n]`` for every prompt length n."""
        lengths = tuple(int(n) for n in lengths)
        self._check_text_lengths(lengths)
        return PackedText(torch.cat([self.cfg_uncond[:n] for n in lengths]), lengths)

    def drop_text(self, text: PackedText, drop_B: torch.Tensor) -> PackedText:
        """Replace the prompts where ``drop_B`` is True by the null text (CFG training dropout, reference §2.1)."""
        if drop_B.shape != (text.batch_size,):
            raise ValueError(f"drop mask must have shape ({text.batch_size},), got {tuple(drop_B.shape)}")
        null = self.null_text(text.lengths).features_NC.to(text.features_NC.dtype)
        row_drop = torch.repeat_interleave(drop_B.to(text.features_NC.device), torch.tensor(text.lengths, device=text.features_NC.device))
        return PackedText(torch.where(row_drop[:, None], null, text.features_NC), text.lengths)

    def _check_text_lengths(self, lengths: Sequence[int]) -> None:
        if max(lengths) > self.config.text_maxlen:
            raise ValueError(
                f"a prompt has {max(lengths)} text tokens but the model supports at most text_maxlen="
                f"{self.config.text_maxlen}; truncate the prompt (the text encoder does this with a warning)"
            )

    def condition(self, text: PackedText) -> Condition:
        """Text -> pooled condition cond_BD, shared AdaLN modulation (B, 1, 6, C) and cross-attention memory."""
        if text.features_NC.shape[-1] != self.config.text_channels:
            raise ValueError(
                f"text features have {text.features_NC.shape[-1]} channels but the model expects "
                f"text_channels={self.config.text_channels}"
            )
        self._check_text_lengths(text.lengths)
        normed_NC = self.text_norm(text.features_NC)
        padded_BTC, mask_BT = text.to_padded(normed_NC)
        cond_BD = self.text_proj_for_sos(padded_BTC, mask_BT).float()
        memory_BTC = self.text_proj_for_ca(padded_BTC)
        ada_B16C = self.shared_ada_lin(cond_BD).float().view(cond_BD.shape[0], 1, 6, -1)
        text_memory = TextMemory(memory_BTC, mask_BT, lengths=tuple(int(n) for n in text.lengths))
        return Condition(cond_BD=cond_BD, ada_B16C=ada_B16C, text=text_memory)

    # ------------------------------------------------------------------ sequence pieces
    def start_token(self, cond: Condition) -> torch.Tensor:
        """The single token of scale 1 (B, 1, C): pooled condition + ``pos_start`` (no level embedding yet)."""
        return (cond.cond_BD + self.pos_start[0]).unsqueeze(1)

    def embed_scale(self, scale_index: int, inputs_Bnd: torch.Tensor | None, cond: Condition) -> torch.Tensor:
        """Input tokens of one scale (B, n, C): the start token for scale 0, else word_embed(inputs); + lvl_embed."""
        if scale_index == 0:
            x = self.start_token(cond)
        else:
            x = self.word_embed(inputs_Bnd.to(self.word_embed.weight.dtype)).float()
        return x + self.lvl_embed.weight[scale_index].float()

    def run_blocks(
        self,
        x_BLC: torch.Tensor,
        cond: Condition,
        rope: tuple[torch.Tensor, torch.Tensor],
        contexts: Sequence[SelfAttentionContext],
        after_block: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run all blocks; ``contexts[i]`` serves block i; ``after_block(i, x)`` may rewrite the hidden states."""
        kv = cond.text.kv
        for i, block in enumerate(self.blocks):
            x_BLC = block(x_BLC, cond.ada_B16C, rope, contexts[i], cond.text, None if kv is None else kv[i])
            if after_block is not None:
                x_BLC = after_block(i, x_BLC)
        return x_BLC

    def logits(self, h_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        """Head output (B, L, V) in float32."""
        head = self.head
        return F.linear(self.head_nm(h_BLC, cond_BD), head.weight.float(), head.bias.float())

    def cache_text_kv(self, cond: Condition) -> None:
        """Project the text memory to every block's cross-attention keys/values once (inference); with the flash
        backend on eligible tensors they are packed for flash-attn's varlen kernel (no padding rows)."""
        kv = [block.ca.project_memory(cond.text.memory_BTC) for block in self.blocks]
        kernel = self._attention_kernel
        if kv and isinstance(kernel, FlashAttention) and kernel.cross_attention_ready(kv[0][0]):
            packed = pack_text_kv(*kv[0], cond.text.lengths, kernel.varlen_fn)
            kv = [packed] + [pack_text_kv(k, v, cond.text.lengths, kernel.varlen_fn, packed.cu_seqlens_k)
                             for k, v in kv[1:]]
        cond.text.kv = kv

    # ------------------------------------------------------------------ training forward
    def forward(
        self,
        text: PackedText,
        inputs_BLd: torch.Tensor,
        layout: ScaleLayout | Sequence[Sequence[int]],
        *,
        attention: TrainingAttention = "sdpa",
        text_drop_B: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forcing logits (B, L, V) for all scales at once.

        ``inputs_BLd`` are the transformer inputs of scales 2..K (B, L - 1, d) (``bsq_tokenizer.multiscale.
        transformer_inputs`` / ``flip_and_requantize``); the start token is built from the text. ``attention``:
        "sdpa" (one masked SDPA call), "chunked" (exact, per scale, no mask; uses the attention backend, e.g.
        flash-attn, see :meth:`set_attention_backend`) or "flex" (FlexAttention, compiled).
        """
        layout = layout if isinstance(layout, ScaleLayout) else ScaleLayout.build(layout)
        self._check_inputs(text, inputs_BLd, layout)
        if text_drop_B is not None:
            text = self.drop_text(text, text_drop_B)
        cond = self.condition(text)
        device = inputs_BLd.device
        sos = self.start_token(cond)
        tokens = self.word_embed(inputs_BLd.to(self.word_embed.weight.dtype)).float()
        x_BLC = torch.cat((sos, tokens), dim=1)
        x_BLC = x_BLC + self.lvl_embed.weight.float()[layout.scale_ids(device)]
        rope = layout.rope(self.config.head_dim, self.config.rope_base, device)
        context = self._training_context(attention, layout, device, x_BLC.shape[0])
        h = self.run_blocks(x_BLC, cond, rope, [context] * len(self.blocks))
        return self.logits(h, cond.cond_BD)

    def _training_context(
        self, attention: TrainingAttention, layout: ScaleLayout, device: torch.device, batch: int
    ) -> SelfAttentionContext:
        if attention == "sdpa":
            return MaskedAttention(layout.block_causal_mask(device))
        if attention == "chunked":
            return ChunkedAttention(layout.starts, layout.ends, self.attention_kernel)
        if attention == "flex":
            # block masks and the compiled kernel are built once per (schedule, device) and reused
            key = (layout.schedule, str(device))
            cache = self.__dict__.setdefault("_flex_contexts", {})
            if key not in cache:
                cache[key] = FlexBlockCausalAttention(layout.scale_ids(device), batch, self.config.num_heads)
            return cache[key]
        raise ValueError(f"attention must be 'sdpa', 'chunked' or 'flex', got {attention!r}")

    def _check_inputs(self, text: PackedText, inputs_BLd: torch.Tensor, layout: ScaleLayout) -> None:
        expected = (text.batch_size, layout.total_tokens - layout.sizes[0], self.config.codebook_dim)
        if inputs_BLd.ndim != 3 or tuple(inputs_BLd.shape) != expected:
            raise ValueError(
                f"inputs must have shape (B, L - 1, d) = {expected} for schedule {list(layout.schedule)}, "
                f"got {tuple(inputs_BLd.shape)}"
            )
        if layout.sizes[0] != 1:
            raise ValueError(f"the first scale must be 1x1 (the start token), got {layout.schedule[0]}")
        if layout.num_scales > self.config.num_level_embeddings:
            raise ValueError(
                f"{layout.num_scales} scales exceed the model's {self.config.num_level_embeddings} level embeddings"
            )

    # ------------------------------------------------------------------ utilities
    def cast_blocks(self, dtype: torch.dtype) -> InfinityTransformer:
        """Cast only the blocks (the bulk of the weights) to ``dtype`` (e.g. bf16); text path and head stay fp32."""
        self.blocks.to(dtype)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> InfinityTransformer:
        """Official from-scratch initialisation (reference §5.2); every tensor is drawn from its own generator seeded
        by ``(seed, name)`` (:meth:`initial_value`), so a sharded model materialised tensor by tensor gets exactly
        the values of a whole one."""
        for name, tensor in [*self.named_parameters(), *self.named_buffers()]:
            tensor.copy_(self.initial_value(name, seed))
        return self

    @torch.no_grad()
    def initial_value(self, name: str, seed: int = 0) -> torch.Tensor:
        """The from-scratch value (fp32, CPU, full shape) of parameter or buffer ``name``: truncated normals of std
        sqrt(1 / 3C) for weights (cut at +-2), zeros for biases, ones for norm scales, the official extra scalings
        (head x0.02, head AdaLN x1e-3, output projections x1/sqrt(2 depth), AdaLN gates 5e-6 / 1e-3), log 4 for the
        attention logit scales. Unknown names raise ValueError, so a new parameter cannot go uninitialised."""
        C = self.config.embed_dim
        std = math.sqrt(1 / C / 3)
        try:
            shape = self.get_parameter(name).shape
        except AttributeError:
            shape = self.get_buffer(name).shape
        generator = torch.Generator().manual_seed((seed * 0x9E3779B1 + zlib.crc32(name.encode())) % 2**63)
        module_name, _, leaf = name.rpartition(".")
        module = self.get_submodule(module_name) if module_name else self

        def trunc(s: float) -> torch.Tensor:
            # official: torch's default absolute truncation at [-2, 2]
            return nn.init.trunc_normal_(torch.empty(shape), std=s, generator=generator)

        if name == "cfg_uncond":
            return trunc(1.2) / math.sqrt(self.config.text_channels)
        if name in ("pos_start", "text_proj_for_sos.ca.mat_q"):
            return trunc(std)
        if leaf == "ada_gss":
            gss = torch.randn(shape, generator=generator) / math.sqrt(C)
            gss[:, :, :2] *= 5e-6
            gss[:, :, 2:] *= 1e-3
            return gss
        if leaf == "scale_mul_1H11":
            return torch.full(shape, math.log(4.0))
        if leaf in ("q_bias", "v_bias", "zero_k_bias"):
            return torch.zeros(shape)
        if isinstance(module, nn.LayerNorm | RMSNorm):
            return torch.ones(shape) if leaf == "weight" else torch.zeros(shape)
        if isinstance(module, nn.Linear | nn.Embedding):
            if leaf == "bias":
                return torch.zeros(shape)
            factor = 1.0
            if module_name == "head":
                factor = 0.02
            elif module_name == "head_nm.ada_lin.1":
                factor = 1e-3
            elif re.fullmatch(r"blocks\.\d+\.(sa\.proj|ca\.proj|ffn\.fc2)", module_name):
                factor = 1 / math.sqrt(2 * self.config.depth)
            return trunc(std) * factor
        raise ValueError(f"no initialisation rule for {name} ({type(module).__name__}); add one to initial_value")

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_official(
        cls,
        path_or_state: str | os.PathLike[str] | Mapping[str, torch.Tensor],
        config: InfinityConfig | str | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> InfinityTransformer:
        """An :class:`InfinityTransformer` from an official checkpoint, loaded strictly.

        ``config`` is a preset name (``"infinity-2b"``), an :class:`InfinityConfig`, or ``None`` to infer it from
        shapes. A file is memory-mapped and its tensors become the parameters; an in-memory state dict is copied (the
        model never aliases it). ``device`` / ``dtype`` as in :meth:`from_pretrained`.
        """
        owned = not isinstance(path_or_state, Mapping)
        if isinstance(path_or_state, Mapping):
            raw, source = dict(path_or_state), "state dict"
        else:
            raw, source = read_official_checkpoint(path_or_state), str(path_or_state)
        state = convert_official_state_dict(raw)
        if isinstance(config, str):
            config = get_preset(config)
        if config is None:
            config = infer_config(state)
        return build_strict(lambda: cls(config), state, source, device=device, dtype=dtype, owned=owned)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> InfinityTransformer:
        """Load a directory written by :meth:`save_pretrained`: memory-mapped weights, ``device`` (default CPU) and
        ``dtype`` (floating-point tensors; default as saved) applied per tensor; loading is strict."""
        config = read_config(path)
        weights = Path(path) / WEIGHTS_FILE
        state = load_weights(weights, device=device, dtype=dtype)
        return build_strict(lambda: cls(config), state, str(weights), device=None, dtype=None)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` + ``model.safetensors``, every tensor in its own dtype."""
        return save_pretrained(self, directory)
