"""Attention backends on CPU: SDPA default, flash-attn missing/broken -> clear ImportError, "auto" falls back to SDPA
with a log line, the flash path's layout plumbing, and the kernel is what the mask-free paths actually call."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from bitwise_ar.layout import ScaleLayout
from bitwise_ar.model.attention_backend import flash_call, sdpa_attention
from bitwise_ar.sampling import SamplingConfig, sample
from bitwise_ar.testing import random_text, tiny_transformer

LOGGER = "bitwise_ar.model.attention_backend"
SCHEDULE = [(1, 1), (2, 2), (4, 4)]


def reference_flash_attn_func(q, k, v, softmax_scale=None, causal=False):
    """Stand-in for flash_attn.flash_attn_func with its documented layout: (B, n, H, hd) in and out."""
    assert not causal
    logits = torch.einsum("bnhd,bmhd->bhnm", q.float(), k.float()) * softmax_scale
    return torch.einsum("bhnm,bmhd->bnhd", logits.softmax(-1), v.float()).to(q.dtype)


def _fake_flash_package(root, body: str):
    package = root / "flash_attn"
    package.mkdir()
    (package / "__init__.py").write_text(body)
    return root


@pytest.fixture
def fresh_flash_module():
    """Forget any imported flash_attn for the test and drop the test's stand-in afterwards."""
    before = sys.modules.pop("flash_attn", None)
    yield
    sys.modules.pop("flash_attn", None)
    if before is not None:
        sys.modules["flash_attn"] = before


@pytest.fixture
def no_flash(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # `import flash_attn` raises ModuleNotFoundError


@pytest.fixture
def broken_flash(monkeypatch, tmp_path, fresh_flash_module):
    """An installed-but-broken flash-attn: importing it fails like a build against another CUDA does."""
    body = "raise OSError('libcudart.so.11.0: cannot open shared object file: No such file or directory')\n"
    monkeypatch.syspath_prepend(str(_fake_flash_package(tmp_path, body)))


@pytest.fixture
def working_flash(monkeypatch, tmp_path, fresh_flash_module):
    """An importable flash_attn whose flash_attn_func follows the real signature (CPU stand-in)."""
    import inspect

    body = "import torch\n" + inspect.getsource(reference_flash_attn_func).replace("reference_flash_attn_func", "flash_attn_func")
    monkeypatch.syspath_prepend(str(_fake_flash_package(tmp_path, body)))


def _generate(model):
    text = random_text([3, 5], model.config.text_channels, seed=1)
    settings = SamplingConfig(cfg=2.0, tau=1.0, top_k=0, top_p=0.0)
    with torch.inference_mode():
        return sample(model, text, ScaleLayout.build(SCHEDULE), settings, generator=torch.Generator().manual_seed(3),
                      keep_logits=True)


def test_default_is_sdpa_and_bad_names_are_rejected():
    model = tiny_transformer(seed=0)
    assert model.attention_backend == "sdpa" and model.attention_kernel is sdpa_attention
    with pytest.raises(ValueError, match=r"\['sdpa', 'flash', 'auto'\]"):
        model.set_attention_backend("xformers")


def test_flash_missing_names_the_install_command_and_auto_falls_back(no_flash, caplog):
    model = tiny_transformer(seed=0)
    with pytest.raises(ImportError, match="is not installed") as info:
        model.set_attention_backend("flash")
    assert "pip install 'bitwise-ar[flash]'" in str(info.value) and "pip install flash-attn" in str(info.value)
    assert model.attention_backend == "sdpa"  # unchanged after the failure
    reference = _generate(model)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert model.set_attention_backend("auto").attention_backend == "sdpa"
    assert any("flash-attn unavailable, using SDPA" in r.getMessage() for r in caplog.records)
    again = _generate(model)
    assert all(torch.equal(a, b) for a, b in zip(again.bits, reference.bits, strict=True))


def test_broken_flash_install_is_an_import_error_and_auto_falls_back(broken_flash, caplog):
    model = tiny_transformer(seed=0)
    with pytest.raises(ImportError, match=r"failed to import \(OSError: libcudart") as info:
        model.set_attention_backend("flash")
    assert "pip install flash-attn" in str(info.value) and isinstance(info.value.__cause__, OSError)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert model.set_attention_backend("auto").attention_backend == "sdpa"
    assert any("libcudart" in r.getMessage() for r in caplog.records)


def test_importable_flash_on_cpu(working_flash, caplog):
    """flash-attn imports but this is a CPU: "flash" says why it cannot run, "auto" picks SDPA (no CUDA)."""
    model = tiny_transformer(seed=0)
    assert model.set_attention_backend("flash").attention_backend == "flash"
    with pytest.raises(ValueError, match="needs CUDA"):
        _generate(model)
    if not torch.cuda.is_available():
        with caplog.at_level(logging.INFO, logger=LOGGER):
            assert model.set_attention_backend("auto").attention_backend == "sdpa"
        assert any("CUDA is not available" in r.getMessage() for r in caplog.records)


def test_flash_layout_plumbing_matches_sdpa_and_the_kernel_is_used():
    """flash_call transposes our (B, H, n, hd) to flash-attn's (B, n, H, hd) and back; with a reference
    flash_attn_func the KV-cached sampler and the chunked training forward reproduce SDPA, through the kernel."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, n, 16, generator=gen) for n in (5, 9, 9))
    assert (flash_call(reference_flash_attn_func, q, k, v, 0.7) - sdpa_attention(q, k, v, 0.7)).abs().max() < 1e-5

    calls = []

    def kernel(q, k, v, scale):
        calls.append(q.shape[2])
        return flash_call(reference_flash_attn_func, q, k, v, scale)

    model = tiny_transformer(seed=0)
    reference = _generate(model)
    model._attention_kernel = kernel  # what set_attention_backend("flash") installs on a CUDA machine, minus the GPU
    flashed = _generate(model)
    assert calls and set(calls) == {1, 4, 16}  # every scale of every block went through the kernel
    assert all(torch.equal(a, b) for a, b in zip(flashed.bits, reference.bits, strict=True))
    for a, b in zip(flashed.logits, reference.logits, strict=True):
        assert (a - b).abs().max() < 1e-4

    layout = ScaleLayout.build(SCHEDULE)
    text = random_text([3, 5], model.config.text_channels, seed=2)
    inputs = torch.randn(2, layout.total_tokens - 1, model.config.codebook_dim, generator=gen)
    with torch.no_grad():
        chunked = model(text, inputs, layout, attention="chunked")
        model._attention_kernel = sdpa_attention
        masked = model(text, inputs, layout, attention="sdpa")
    assert (chunked - masked).abs().max() < 1e-4


def reference_flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                     softmax_scale=None, **kwargs):
    """Stand-in for flash_attn.flash_attn_varlen_func: packed (N, H, hd) sequences delimited by int32 offsets."""
    outs = []
    for i in range(len(cu_seqlens_q) - 1):
        qs, qe, ks, ke = int(cu_seqlens_q[i]), int(cu_seqlens_q[i + 1]), int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
        assert qe - qs <= max_seqlen_q and ke - ks <= max_seqlen_k
        logits = torch.einsum("nhd,mhd->hnm", q[qs:qe].float(), k[ks:ke].float()) * softmax_scale
        outs.append(torch.einsum("hnm,mhd->nhd", logits.softmax(-1), v[ks:ke].float()))
    return torch.cat(outs).to(q.dtype)


def test_cross_attention_varlen_plumbing_and_cpu_fallback(caplog):
    """Packed text keys + the varlen call reproduce the masked SDPA cross-attention (also with the compiled path's
    padding rows); on a CPU, "auto" keeps the padded SDPA path for cross-attention (and says why)."""
    from bitwise_ar.model.attention_backend import FlashAttention, PackedTextKV, pack_text_kv
    from bitwise_ar.scale_step import pad_text_keys

    model = tiny_transformer(seed=0)
    text = random_text([3, 5], model.config.text_channels, seed=1)
    x = torch.randn(2, 4, model.config.embed_dim, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        cond = model.condition(text)
        model.cache_text_kv(cond)
        ca = model.blocks[0].ca
        reference = ca(x, cond.text, cond.text.kv[0])
        packed = pack_text_kv(*cond.text.kv[0], cond.text.lengths, reference_flash_attn_varlen_func)
        assert packed.k_NHc.shape[0] == 8 and packed.cu_seqlens_k.tolist() == [0, 3, 5 + 3]
        assert (ca(x, cond.text, packed) - reference).abs().max() < 1e-5
        cond.text.kv = [packed]
        pad_text_keys(cond)  # extra rows past the last offset are never read
        assert cond.text.kv[0].k_NHc.shape[0] % 64 == 0
        assert (ca(x, cond.text, cond.text.kv[0]) - reference).abs().max() < 1e-5

        flash = FlashAttention(reference_flash_attn_func, strict=False, varlen_fn=reference_flash_attn_varlen_func)
        model._attention_kernel = flash  # what "auto" installs where flash-attn imports; this is a CPU
        cond = model.condition(text)
        with caplog.at_level(logging.INFO, logger=LOGGER):
            model.cache_text_kv(cond)
        assert not isinstance(cond.text.kv[0], PackedTextKV)  # fell back to the padded SDPA layout
        assert any("needs CUDA" in r.getMessage() for r in caplog.records)
        assert torch.equal(ca(x, cond.text, cond.text.kv[0]), reference)
        model._attention_kernel = FlashAttention(reference_flash_attn_func, strict=True,
                                                 varlen_fn=reference_flash_attn_varlen_func)
        with pytest.raises(ValueError, match="needs CUDA"):
            model.cache_text_kv(model.condition(text))
