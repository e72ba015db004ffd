"""LoRA adapters on the transformer's attention and FFN projections, with the ``peft`` library (``bitwise-ar[lora]``).

peft wraps the chosen ``nn.Linear`` layers of our plain :class:`~bitwise_ar.model.InfinityTransformer` in place
(``inject_adapter_in_model``): each computes ``W x + (alpha / rank) B A x`` with a trainable rank-``r`` pair (A, B),
B starting at zero so the adapted model starts equal to its base, and every other parameter frozen. Hu et al. 2021,
"LoRA", Sec. 4.1.

An adapter directory uses peft's layout plus one file of ours::

    adapter_dir/
      adapter_model.safetensors   the A and B matrices (peft key names, no adapter name)
      adapter_config.json         peft's LoraConfig
      infinity_lora.json          {"format", "base_fingerprint", "base_config", "settings", "parameters", ...}

``base_fingerprint`` (:func:`base_fingerprint`) and ``base_config`` record the base weights the adapter was trained
on, so :func:`load_adapter` refuses another base with a one-line error instead of producing quiet garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bitwise_ar.config import LORA_TARGETS, LoraSettings

__all__ = [
    "LORA_TARGETS",
    "LoraSettings",
    "adapter_parameters",
    "add_lora",
    "base_fingerprint",
    "load_adapter",
    "merge_lora_",
    "save_adapter",
    "unload_lora_",
]

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_META = "infinity_lora.json"
ADAPTER_FORMAT = "bitwise-ar-lora/1"
ADAPTER_NAME = "default"
def _peft() -> Any:
    try:
        import peft
    except ImportError as err:
        raise ImportError("LoRA needs peft: pip install 'bitwise-ar[lora]'") from err
    return peft


def target_pattern(targets: tuple[str, ...]) -> str:
    """The module-name regex peft matches (fully) against ``blocks.<i>.<layer>.<linear>``."""
    return r"blocks\.\d+\.(" + "|".join(t.replace(".", r"\.") for t in targets) + ")"


def peft_config(settings: LoraSettings) -> Any:
    """The ``peft.LoraConfig`` of ``settings``."""
    return _peft().LoraConfig(
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=target_pattern(settings.targets), bias="none",
    )  # fmt: skip


def has_lora(model: nn.Module) -> bool:
    """Whether peft adapter layers are injected in ``model``."""
    return any("lora_A" in name for name, _ in model.named_parameters())


def add_lora(model: nn.Module, settings: LoraSettings | Any, *, seed: int = 0) -> nn.Module:
    """Wrap the target projections of ``model`` in LoRA layers (in place) and freeze everything else.

    ``settings`` is a :class:`LoraSettings` or a ``peft.LoraConfig``. The A matrices are drawn from ``seed`` (B is
    zero), so the adapted model computes exactly what the base did until it is trained."""
    peft = _peft()
    if has_lora(model):
        raise ValueError("the model already has a LoRA adapter; merge_lora() or reload the base before adding another")
    config = peft_config(settings) if isinstance(settings, LoraSettings) else settings
    with torch.random.fork_rng(devices=[]):  # peft draws A on the CPU before moving it to the base layer's device
        torch.manual_seed(seed)
        peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors in peft's key layout (``...mat_qkv.lora_A.weight``)."""
    return dict(_peft().get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME))


def adapter_parameters(model: nn.Module) -> int:
    """How many parameters the adapter trains."""
    return sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)


def base_fingerprint(model: nn.Module) -> str:
    """A hash of the base weights (adapter tensors excluded, ``base_layer`` wrappers seen through): names, shapes and
    up to 1024 evenly spaced values per tensor rounded to bf16, so an fp32 and a bf16 copy of one model agree while a
    different model (another seed, another fine-tune, merged weights) does not."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if "lora_" in name:
            continue
        flat = param.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 1024)][:1024].to(torch.bfloat16).float().cpu()
        digest.update(name.replace(".base_layer", "").encode())
        digest.update(str(tuple(param.shape)).encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def save_adapter(
    model: nn.Module, directory: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write the adapter of ``model`` (layout in the module docstring); ``extra`` joins ``infinity_lora.json``."""
    from safetensors.torch import save_file

    if not has_lora(model):
        raise ValueError("the model has no LoRA adapter to save")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in adapter_state_dict(model).items()}
    save_file(state, directory / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    config = model.peft_config[ADAPTER_NAME]
    config.save_pretrained(str(directory))
    meta = {
        "format": ADAPTER_FORMAT,
        "base_fingerprint": base_fingerprint(model),
        "base_config": model.config.to_dict(),
        "settings": {"rank": config.r, "alpha": config.lora_alpha, "dropout": config.lora_dropout},
        "parameters": sum(v.numel() for v in state.values()),
        **dict(extra or {}),
    }
    (directory / ADAPTER_META).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def read_adapter_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """``infinity_lora.json`` of an adapter directory (FileNotFoundError / ValueError naming what is wrong)."""
    directory = Path(directory)
    for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG, ADAPTER_META):
        if not (directory / name).is_file():
            raise FileNotFoundError(
                f"{directory / name} not found; an adapter directory holds {ADAPTER_WEIGHTS}, {ADAPTER_CONFIG} and "
                f"{ADAPTER_META} (written by bitwise_ar.lora.save_adapter)"
            )
    try:
        meta = json.loads((directory / ADAPTER_META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{directory / ADAPTER_META} is not valid JSON ({err})") from None
    if meta.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{directory / ADAPTER_META} has format {meta.get('format')!r}, expected {ADAPTER_FORMAT!r}")
    return meta


def check_base(model: nn.Module, meta: Mapping[str, Any], source: str | os.PathLike[str]) -> None:
    """ValueError when ``model`` is not the base an adapter was trained on (architecture first, then weights)."""
    config = model.config.to_dict()
    diffs = [f"{k} {meta['base_config'].get(k)!r} vs {v!r}" for k, v in config.items() if meta["base_config"].get(k) != v]
    if diffs:
        raise ValueError(
            f"LoRA adapter {source} was trained on another architecture than this transformer ({'; '.join(diffs)})"
        )
    here = base_fingerprint(model)
    if here != meta["base_fingerprint"]:
        trained_from = meta.get("init_from") or "its training run's initial weights"
        raise ValueError(
            f"LoRA adapter {source} was trained on other base weights (fingerprint {meta['base_fingerprint']}, this "
            f"transformer {here}); load it onto the model it was trained from ({trained_from}), unmerged"
        )


def load_adapter(model: nn.Module, directory: str | os.PathLike[str]) -> nn.Module:
    """Inject the adapter saved in ``directory`` into ``model`` (in place, unmerged) after :func:`check_base`."""
    from safetensors.torch import load_file

    peft = _peft()
    directory = Path(directory)
    meta = read_adapter_meta(directory)
    check_base(model, meta, directory)
    config = peft.LoraConfig.from_pretrained(str(directory))
    add_lora(model, config)
    state = load_file(directory / ADAPTER_WEIGHTS, device=str(next(model.parameters()).device))
    result = peft.set_peft_model_state_dict(model, state, adapter_name=ADAPTER_NAME)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"LoRA adapter {directory} does not fit its own config: missing {missing[:4]}, unexpected "
            f"{list(result.unexpected_keys)[:4]}"
        )
    model.eval()
    return model


def unload_lora_(model: nn.Module, *, merge: bool) -> nn.Module:
    """Replace every LoRA layer of ``model`` by its base ``nn.Linear``: with ``merge``, after adding the adapter's
    update into the base weight (peft's ``merge``); without, dropping the adapter."""
    _peft()
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]
    if not layers:
        raise ValueError("the model has no LoRA adapter to merge or remove")
    for name, module in layers:
        if merge:
            module.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model


def merge_lora_(model: nn.Module) -> nn.Module:
    """Fold the adapter into the base weights (in place): the model becomes a plain transformer again, as fast as
    the base, computing the adapted function up to float rounding."""
    return unload_lora_(model, merge=True)
