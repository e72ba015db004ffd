"""T5 text encoder wrapper: prompts -> packed features (reference §2.1), loaded from a LOCAL directory only.

``transformers`` (a dependency of bitwise-ar) is imported lazily here and nowhere else; the released models'
sentencepiece tokenizer (flan-t5-xl) also needs the ``text`` extra (``pip install 'bitwise-ar[text]'``).
The directory is a Hugging Face ``save_pretrained`` folder holding a T5 (encoder) checkpoint and its tokenizer, e.g.
flan-t5-xl for the released models. Only the valid tokens of each prompt (including the trailing ``</s>``) are kept.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bitwise_ar.model.text import PackedText

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}


def require_transformers() -> Any:
    """The `transformers` module, or an ImportError saying how to install it."""
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the T5 text encoder needs transformers, a dependency of bitwise-ar: pip install bitwise-ar"
        ) from err
    return transformers


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float32``/``"fp32"``/``"bf16"``/``"fp16"`` -> a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


class T5TextEncoder:
    """Encode prompts with a T5 encoder into :class:`PackedText` (fp32 features).

    ``max_length`` caps the tokens per prompt (longer prompts are truncated with a warning); it should not exceed the
    transformer's ``text_maxlen``. ``release_after_encode`` frees the T5 weights after each call (low-memory path;
    the next call reloads them from ``directory``); ``offload_device`` instead parks them there (e.g. "cpu").
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        dtype: torch.dtype | str = torch.float32,
        device: torch.device | str = "cpu",
        max_length: int = 512,
        release_after_encode: bool = False,
        offload_device: torch.device | str | None = None,
    ) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(
                f"text encoder directory {self.directory} not found; it must hold a T5 checkpoint and its tokenizer "
                "saved with save_pretrained (e.g. a local copy of google/flan-t5-xl)"
            )
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (one token + </s>), got {max_length}")
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        self.max_length = max_length
        self.release_after_encode = release_after_encode
        self.offload_device = None if offload_device is None else torch.device(offload_device)
        transformers = require_transformers()
        # legacy=True as in the official loader: text after a special token gets the sentencepiece dummy prefix ("▁"),
        # like the slow T5Tokenizer(legacy=True); it also pins the slow->fast conversion of a spiece.model-only folder
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(self.directory), local_files_only=True, legacy=True
            )
        except (ImportError, ValueError) as err:
            if "sentencepiece" not in str(err).lower():
                raise
            raise ImportError(
                f"the tokenizer in {self.directory} is a sentencepiece model, which needs the 'text' extra: "
                "pip install 'bitwise-ar[text]'"
            ) from err
        self._model: Any | None = None

    # ------------------------------------------------------------------ model lifetime
    def _load_model(self) -> Any:
        transformers = require_transformers()
        model = transformers.T5EncoderModel.from_pretrained(
            str(self.directory), local_files_only=True, dtype=self.dtype
        )
        return model.to(self.device).eval().requires_grad_(False)

    @property
    def model(self) -> Any:
        """The T5 encoder, loaded (or brought back from the offload device) on first use."""
        if self._model is None:
            self._model = self._load_model()
        elif next(self._model.parameters()).device != self.device:
            self._model.to(self.device)
        return self._model

    @property
    def hidden_size(self) -> int:
        transformers = require_transformers()
        return int(transformers.AutoConfig.from_pretrained(str(self.directory), local_files_only=True).d_model)

    def release(self) -> None:
        """Free the T5 weights (and the CUDA cache); they are reloaded on the next :meth:`encode`."""
        self._model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ encoding
    def unknown_words(self, prompts: Sequence[str]) -> list[list[str]]:
        """Per prompt, the words (in order, once each) that the tokenizer reads as its unknown token.

        The model never saw those words: the small demo encoder knows only the ShapesT2I caption words, and T5's
        sentencepiece vocabulary lacks some characters. Unknown punctuation alone is not reported.
        """
        unknown_id = self.tokenizer.unk_token_id
        if unknown_id is None:
            return [[] for _ in prompts]
        encoded = self.tokenizer(list(prompts), add_special_tokens=False, return_offsets_mapping=True)
        found = []
        for prompt, ids, offsets in zip(prompts, encoded["input_ids"], encoded["offset_mapping"], strict=True):
            words = (prompt[start:end].strip() for token, (start, end) in zip(ids, offsets, strict=True)
                     if token == unknown_id)  # fmt: skip
            found.append(list(dict.fromkeys(w for w in words if any(c.isalnum() for c in w))))
        return found

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask (B, T), padded to the longest prompt; too-long prompts truncated (warning)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise ValueError("no prompts given")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"prompt {i} is empty; give a non-empty text (use negative prompts for 'nothing')")
        full = self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        for i, ids in enumerate(full):
            if len(ids) > self.max_length:
                warnings.warn(
                    f"prompt {i} has {len(ids)} tokens; truncated to the encoder limit of {self.max_length}",
                    UserWarning,
                    stacklevel=3,
                )
        enc = self.tokenizer(
            list(prompts), max_length=self.max_length, truncation=True, padding="longest", return_tensors="pt"
        )
        return enc["input_ids"], enc["attention_mask"]

    @torch.no_grad()
    def encode(self, prompts: str | Sequence[str]) -> PackedText:
        """Prompts -> packed float32 features (N, d_model) with per-prompt lengths (valid tokens incl. ``</s>``)."""
        ids, mask = self.tokenize([prompts] if isinstance(prompts, str) else prompts)
        model = self.model
        hidden = model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
        lengths = tuple(int(n) for n in mask.sum(1))
        text = PackedText(hidden.float()[mask.to(self.device).bool()], lengths)
        if self.release_after_encode:
            self.release()
        elif self.offload_device is not None:
            self._model.to(self.offload_device)
        return text


def build_tiny_t5(
    directory: str | os.PathLike[str],
    vocabulary: Sequence[str],
    *,
    d_model: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    d_ff: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny random T5 encoder + word-level tokenizer (offline) to ``directory``; for tests and demos.

    The tokenizer lower-cases, splits on whitespace and punctuation, maps unknown words to ``<unk>`` and appends
    ``</s>``, like the T5 tokenizer does.
    """
    transformers = require_transformers()
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    specials = ["<pad>", "</s>", "<unk>"]
    words = [w for w in dict.fromkeys(v.lower() for v in vocabulary) if w not in specials]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = transformers.T5Config(
        vocab_size=len(vocab), d_model=d_model, d_kv=d_model // num_heads, d_ff=d_ff, num_layers=num_layers,
        num_heads=num_heads, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):  # transformers initialises from the global RNG; keep it untouched
        torch.manual_seed(seed)
        model = transformers.T5EncoderModel(config)
    directory = Path(directory)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory
