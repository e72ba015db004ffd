"""Run the official FoundationVision/Infinity code on a CPU, in this process, for side-by-side benchmarks.

Nothing of the official code lives in this repository: ``import_official(PATH)`` imports it at run time from a
checkout (``git --git-dir=... archive HEAD | tar -x -C PATH``). What makes it importable on a CPU without its CUDA-only
dependencies is written here (see the reference notes, "Running the official code on CPU"):

* small stand-ins for modules it imports but does not need here (timm's ``register_model`` / ``DropPath``,
  torchvision, imageio) and a ``flash_attn`` whose varlen call runs PyTorch SDPA per sample;
* its cross-attention rounds q/k/v to bfloat16 for flash-attn; the official parity fixtures were made with that cast
  disabled, and so is it here (its ``torch.bfloat16`` resolves to float32 inside ``basic.py``), so both sides are fp32;
* its AdaLN norm helpers are ``torch.compile``d; they run uncompiled here (same formula, no per-shape compile).

Its pure-Python dependencies einops and pytz must be importable: ``uv pip install --target DIR einops pytz`` and pass
``deps=DIR``.
"""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from bitwise_ar.config import InfinityConfig
from bitwise_ar.model import InfinityTransformer
from bitwise_ar.model.state_dict import to_official_state_dict

SHIMS = {
    "timm/__init__.py": "",
    "timm/loss.py": "class SoftTargetCrossEntropy:\n    pass\n",
    "timm/models/__init__.py": "def register_model(fn):\n    return fn\n",
    "timm/models/layers.py": (
        "import torch\n"
        "class DropPath(torch.nn.Module):\n"
        "    def __init__(self, drop_prob=0.0, *args, **kwargs):\n"
        "        super().__init__()\n"
        "        self.drop_prob = drop_prob\n"
        "    def forward(self, x):\n"
        "        return x\n"
        "def drop_path(x, *args, **kwargs):\n"
        "    return x\n"
        "def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):\n"
        "    return torch.nn.init.trunc_normal_(tensor, mean, std, a, b)\n"
    ),
    "torchvision/__init__.py": "",
    "torchvision/transforms.py": "",
    "imageio.py": "",
    "flash_attn/__init__.py": (
        "import torch\n"
        "import torch.nn.functional as F\n"
        "def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **kwargs):\n"
        "    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),\n"
        "                                         scale=softmax_scale, is_causal=causal)\n"
        "    return out.transpose(1, 2)\n"
        "def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,\n"
        "                                    dropout_p=0.0, softmax_scale=None, **kwargs):\n"
        "    outs = []\n"
        "    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()\n"
        "    for i in range(len(cq) - 1):\n"
        "        qi = q[cq[i]:cq[i + 1]].transpose(0, 1)\n"
        "        ki, vi = kv[ck[i]:ck[i + 1]].unbind(1)\n"
        "        o = F.scaled_dot_product_attention(qi, ki.transpose(0, 1), vi.transpose(0, 1), scale=softmax_scale)\n"
        "        outs.append(o.transpose(0, 1))\n"
        "    return torch.cat(outs)\n"
    ),
}


def import_official(path: str | Path, deps: str | Path | None = None) -> types.SimpleNamespace:
    """Import the official modules from a checkout at ``path``; returns a namespace with ``Infinity``,
    ``vae_model`` and the ``basic`` module."""
    path = Path(path)
    if not (path / "infinity" / "models" / "infinity.py").is_file():
        raise FileNotFoundError(f"{path} is not a FoundationVision/Infinity checkout (no infinity/models/infinity.py)")
    shim_dir = Path(tempfile.mkdtemp(prefix="official_shims_"))
    for name, text in SHIMS.items():
        (shim_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (shim_dir / name).write_text(text)
    sys.path[:0] = [str(path), str(shim_dir)] + ([str(deps)] if deps else [])
    try:
        import einops  # noqa: F401
        import pytz  # noqa: F401
    except ImportError as err:
        raise ImportError(f"the official code needs einops and pytz: uv pip install --target DIR einops pytz, then "
                          f"--official-deps DIR ({err})") from err
    from infinity.models import basic, infinity
    from infinity.models.bsq_vae import vae as vae_module

    # fp32 cross-attention (see the module docstring): basic.py's torch.bfloat16 becomes float32
    proxy = types.ModuleType("torch_fp32_proxy")
    proxy.__dict__.update({k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")})
    proxy.bfloat16 = torch.float32
    basic.torch = proxy
    for module in (basic, infinity):
        for name in ("fused_ada_layer_norm", "fused_ada_rms_norm", "fused_rms_norm"):
            original = getattr(getattr(module, name, None), "_torchdynamo_orig_callable", None)
            if original is not None:
                setattr(module, name, original)
    return types.SimpleNamespace(Infinity=infinity.Infinity, vae_model=vae_module.vae_model, basic=basic)


def official_vae(official: types.SimpleNamespace, state: dict[str, torch.Tensor] | None, codebook_dim: int = 32):
    """The official d32-architecture autoencoder; ``state``: our tokenizer's state dict (same key names)."""
    ckpt = {"vae": dict(state)} if state is not None else None
    return official.vae_model(ckpt, "dynamic", codebook_dim, 2**codebook_dim, test_mode=True).eval()


def official_transformer(official: types.SimpleNamespace, ours: InfinityTransformer, vae, block_chunks: int):
    """The official Infinity with our model's weights (same config, official key layout, strict load)."""
    config: InfinityConfig = ours.config
    model = official.Infinity(
        vae,
        text_channels=config.text_channels,
        text_maxlen=config.text_maxlen,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        drop_path_rate=0.0,
        norm_eps=config.norm_eps,
        shared_aln=True,
        head_aln=True,
        cond_drop_rate=0.0,
        cos_attn=True,
        fused_norm=True,
        block_chunks=block_chunks,
        checkpointing=None,
        use_flex_attn=False,
        add_lvl_embeding_only_first_block=1,
        use_bit_label=1,
        rope2d_each_sa_layer=1,
        rope2d_normalized_by_hw=2,
        pn="0.06M",
        train_h_div_w_list=[1.0],
        apply_spatial_patchify=0,
        inference_mode=True,
    ).eval()
    state = to_official_state_dict(ours.state_dict(), block_chunks)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "zero_k_bias" not in k]
    if missing or unexpected:
        raise RuntimeError(f"official load: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def official_generate(model, vae, features_NC: torch.Tensor, lengths: list[int], schedule, cfg: float, tau: float):
    """Greedy CFG generation with the official loop; returns the bits of every scale, (B, h, w, d) uint8 each.

    The official loop keeps the bits internally; they are read where it turns them into codes.
    """
    lens = torch.tensor(lengths, dtype=torch.int32)
    cu = F.pad(lens.cumsum(0, dtype=torch.int32), (1, 0))
    K = len(schedule)
    lfq = vae.quantizer.lfq
    seen: list[torch.Tensor] = []
    to_codes = lfq.indices_to_codes

    def recording(idx_Bld, *args, **kwargs):
        seen.append(idx_Bld[:, 0].to(torch.uint8))  # (B, 1, h, w, d) -> (B, h, w, d)
        return to_codes(idx_Bld, *args, **kwargs)

    lfq.indices_to_codes = recording
    try:
        model.autoregressive_infer_cfg(
            vae=vae, scale_schedule=[(1, h, w) for h, w in schedule], label_B_or_BLT=(features_NC, lens, cu, max(lengths)),
            B=len(lengths), g_seed=0, cfg_list=[cfg] * K, tau_list=[tau] * K, top_k=1, top_p=0.0, returns_vemb=1,
            vae_type=32, ret_img=False, inference_mode=True, cfg_insertion_layer=[0],
        )
    finally:
        del lfq.indices_to_codes
    return seen
