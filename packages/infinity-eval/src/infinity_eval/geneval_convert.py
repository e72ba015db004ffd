"""Convert GenEval's detector, the mmdetection 2.x Mask2Former checkpoint
(``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth``), into a transformers
``Mask2FormerForUniversalSegmentation`` folder, with torch alone (no mmcv/mmdet).

The source layout follows the mmdet 2.x config (Swin-S: embed 96, depths 2-2-18-2, heads 3-6-12-24, window 7;
``Mask2FormerHead``: 256 channels, 100 queries, 80 thing classes, an ``MSDeformAttnPixelDecoder`` of 6
``BaseTransformerLayer`` (self_attn, norm, ffn, norm; 8 heads, 3 levels, 4 points, FFN 1024) and a 9-layer
``DetrTransformerDecoder`` (cross_attn, norm, self_attn, norm, ffn, norm; FFN 2048) with a post-norm):

| mmdet 2.x | transformers |
|---|---|
| ``backbone.patch_embed.{projection,norm}`` | ``…swin.embeddings.{patch_embeddings.projection,norm}`` |
| ``backbone.stages.i.blocks.j.{norm1,norm2}`` | ``…swin.encoder.layers.i.blocks.j.{layernorm_before,layernorm_after}`` |
| ``….attn.w_msa.qkv`` (3C×C) | ``….attention.{q,k,v}_proj`` (rows split in thirds) |
| ``….attn.w_msa.proj`` / ``relative_position_bias_table`` | ``….attention.o_proj`` / ``….relative_position_bias.relative_position_bias_table`` |
| ``….ffn.layers.{0.0,1}`` | ``….mlp.{fc1,fc2}`` |
| ``backbone.stages.i.downsample.{reduction,norm}`` | same names; input channels reordered (below) |
| ``backbone.norm{i}`` | ``…encoder.hidden_states_norms.stage{i+1}`` |
| ``panoptic_head.pixel_decoder.input_convs.i.{conv,gn}`` | ``…decoder.input_projections.i.{0,1}`` |
| ``….encoder.layers.n.attentions.0.*`` / ``norms.{0,1}`` / ``ffns.0.layers.{0.0,1}`` | ``….encoder.layers.n.self_attn.*`` / ``{self_attn,final}_layer_norm`` / ``fc1, fc2`` |
| ``….level_encoding.weight`` / ``lateral_convs.0`` / ``output_convs.0`` / ``mask_feature`` | ``…decoder.level_embed`` / ``adapter_1`` / ``layer_1`` / ``mask_projection`` |
| ``panoptic_head.transformer_decoder.layers.n.attentions.{0,1}`` | ``….layers.n.cross_attn`` / ``self_attn.{q,k,v,out}_proj`` (in_proj split) |
| ``….norms.{0,1,2}`` / ``ffns.0.layers.{0.0,1}`` / ``post_norm`` | ``{cross_attn,self_attn,final}_layer_norm`` / ``fc1, fc2`` / ``decoder.layernorm`` |
| ``panoptic_head.{query_embed,query_feat,level_embed}`` | ``transformer_module.{queries_embedder,queries_features,level_embed}`` |
| ``panoptic_head.cls_embed`` / ``mask_embed.{0,2,4}`` | ``class_predictor`` / ``mask_predictor.mask_embedder.{0,1,2}.0`` |

mmdet's Swin ``PatchMerging`` gathers each 2×2 neighbourhood with ``nn.Unfold`` (input channel ``c·4 + 2·dy + dx``)
while transformers concatenates the four shifted maps (channel ``k·C + c`` with k = (0,0), (1,0), (0,1), (1,1) as
(dy, dx)): the reduction's input columns and the norm are permuted accordingly (the inverse of mmdet's own
``correct_unfold_reduction_order``). The checkpoint's ``relative_position_index`` buffers are checked against the
Swin formula and dropped (transformers computes them). Keys transformers has and mmdet does not: the Swin final
``layernorm`` (not used by the backbone's outputs; set to identity) and ``criterion.empty_weight`` (the loss class
weights, ``[1]*80 + [0.1]`` as in the mmdet config). Every source key must be consumed and every target key filled,
or the conversion fails naming them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

Tensor = torch.Tensor


@dataclass(frozen=True, kw_only=True)
class MMDetMask2FormerSpec:
    """Architecture of an mmdet 2.x Swin Mask2Former (defaults: GenEval's ``mask2former_swin-s-p4-w7-224``)."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    pretrain_image_size: int = 224
    feat_channels: int = 256
    num_queries: int = 100
    num_classes: int = 80
    encoder_layers: int = 6
    encoder_ffn: int = 1024
    decoder_layers: int = 9
    decoder_ffn: int = 2048
    attention_heads: int = 8
    num_levels: int = 3
    num_points: int = 4
    no_object_weight: float = 0.1

    def __post_init__(self) -> None:
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ValueError("a Mask2Former Swin backbone has 4 stages (depths and num_heads of length 4)")

    @property
    def stage_channels(self) -> list[int]:
        return [self.embed_dim * 2**i for i in range(4)]


GENEVAL_SPEC = MMDetMask2FormerSpec()
#: The sha256 prefix in the file name of GenEval's checkpoint (mmdet names checkpoints by their hash's first 8 digits).
GENEVAL_SHA256_PREFIX = "743b7d99"


def hf_config(spec: MMDetMask2FormerSpec = GENEVAL_SPEC, *, id2label: Mapping[int, str] | None = None) -> Any:
    """The transformers ``Mask2FormerConfig`` of the same architecture."""
    try:
        from transformers import Mask2FormerConfig, SwinConfig
    except ImportError as exc:
        raise ImportError("the GenEval detector converter needs transformers: pip install 'infinity-eval[models]'") from exc
    backbone = SwinConfig(image_size=spec.pretrain_image_size, patch_size=4, embed_dim=spec.embed_dim,
                          depths=list(spec.depths), num_heads=list(spec.num_heads), window_size=spec.window_size,
                          mlp_ratio=spec.mlp_ratio, qkv_bias=True, drop_path_rate=0.0,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    labels = dict(id2label) if id2label is not None else {i: str(i) for i in range(spec.num_classes)}
    return Mask2FormerConfig(backbone_config=backbone, feature_size=spec.feat_channels, mask_feature_size=spec.feat_channels,
                             hidden_dim=spec.feat_channels, encoder_feedforward_dim=spec.encoder_ffn,
                             dim_feedforward=spec.decoder_ffn, encoder_layers=spec.encoder_layers,
                             decoder_layers=spec.decoder_layers + 1,  # transformers builds decoder_layers - 1 layers
                             num_attention_heads=spec.attention_heads, num_queries=spec.num_queries,
                             num_labels=spec.num_classes, id2label=labels, label2id={v: k for k, v in labels.items()},
                             common_stride=4, feature_strides=[4, 8, 16, 32], no_object_weight=spec.no_object_weight)


def swin_relative_position_index(window: int) -> Tensor:
    """The Swin relative-position index of a ``window``×``window`` window, ``(window², window²)``."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (rel[..., 0] + window - 1) * (2 * window - 1) + (rel[..., 1] + window - 1)


def unfold_to_concat_order(channels: int) -> Tensor:
    """Index ``p`` such that ``x_concat = x_unfold[..., p]`` for a 2×2 patch merge of ``channels`` channels."""
    offsets = [(0, 0), (1, 0), (0, 1), (1, 1)]  # transformers' concatenation order, as (dy, dx)
    return torch.tensor([c * 4 + 2 * dy + dx for dy, dx in offsets for c in range(channels)])


class _Mapper:
    """Collects target tensors while recording which source keys were consumed."""

    def __init__(self, source: Mapping[str, Tensor]) -> None:
        self.source, self.out, self.used = source, {}, set()

    def take(self, key: str) -> Tensor:
        if key not in self.source:
            raise ValueError(f"the mmdet checkpoint has no {key!r}: not the mmdet 2.x Mask2Former layout")
        self.used.add(key)
        return self.source[key]

    def copy(self, src: str, dst: str, fn: Callable[[Tensor], Tensor] | None = None) -> None:
        value = self.take(src)
        self.out[dst] = (fn(value) if fn else value).clone()

    def pair(self, src: str, dst: str, fn: Callable[[Tensor], Tensor] | None = None) -> None:
        """weight and bias."""
        for suffix in ("weight", "bias"):
            self.copy(f"{src}.{suffix}", f"{dst}.{suffix}", fn)

    def split3(self, src: str, dsts: tuple[str, str, str], weight: str = "weight", bias: str = "bias") -> None:
        for name, dst_suffix in ((weight, "weight"), (bias, "bias")):
            for chunk, dst in zip(self.take(f"{src}{name}").chunk(3, dim=0), dsts):
                self.out[f"{dst}.{dst_suffix}"] = chunk.clone()


def convert_state_dict(source: Mapping[str, Tensor], spec: MMDetMask2FormerSpec = GENEVAL_SPEC) -> dict[str, Tensor]:
    """mmdet 2.x Mask2Former ``state_dict`` -> transformers ``Mask2FormerForUniversalSegmentation`` state dict.
    Raises ``ValueError`` naming any source key left unused or failing its check."""
    m = _Mapper(source)
    swin, bb = "model.pixel_level_module.encoder.swin", "backbone"
    m.pair(f"{bb}.patch_embed.projection", f"{swin}.embeddings.patch_embeddings.projection")
    m.pair(f"{bb}.patch_embed.norm", f"{swin}.embeddings.norm")
    index = swin_relative_position_index(spec.window_size)
    for i, depth in enumerate(spec.depths):
        for j in range(depth):
            src, dst = f"{bb}.stages.{i}.blocks.{j}", f"{swin}.encoder.layers.{i}.blocks.{j}"
            m.pair(f"{src}.norm1", f"{dst}.layernorm_before")
            m.pair(f"{src}.norm2", f"{dst}.layernorm_after")
            m.split3(f"{src}.attn.w_msa.qkv.", tuple(f"{dst}.attention.{p}_proj" for p in "qkv"))  # type: ignore[arg-type]
            m.pair(f"{src}.attn.w_msa.proj", f"{dst}.attention.o_proj")
            m.copy(f"{src}.attn.w_msa.relative_position_bias_table",
                   f"{dst}.attention.relative_position_bias.relative_position_bias_table")
            stored = m.take(f"{src}.attn.w_msa.relative_position_index")
            if not torch.equal(stored.long(), index):
                raise ValueError(f"{src}.attn.w_msa.relative_position_index differs from the Swin formula for window "
                                 f"{spec.window_size}: the bias table cannot be copied as is")
            m.pair(f"{src}.ffn.layers.0.0", f"{dst}.mlp.fc1")
            m.pair(f"{src}.ffn.layers.1", f"{dst}.mlp.fc2")
        if i < 3:
            order = unfold_to_concat_order(spec.stage_channels[i])
            src, dst = f"{bb}.stages.{i}.downsample", f"{swin}.encoder.layers.{i}.downsample"
            m.copy(f"{src}.reduction.weight", f"{dst}.reduction.weight", lambda w, o=order: w[:, o])
            m.pair(f"{src}.norm", f"{dst}.norm", lambda w, o=order: w[o])
        m.pair(f"{bb}.norm{i}", f"model.pixel_level_module.encoder.hidden_states_norms.stage{i + 1}")
    # The backbone's final norm exists in transformers' SwinModel but its output is not used by Mask2Former.
    last = spec.stage_channels[-1]
    m.out[f"{swin}.layernorm.weight"], m.out[f"{swin}.layernorm.bias"] = torch.ones(last), torch.zeros(last)

    pd, dec = "panoptic_head.pixel_decoder", "model.pixel_level_module.decoder"
    for i in range(spec.num_levels):
        m.pair(f"{pd}.input_convs.{i}.conv", f"{dec}.input_projections.{i}.0")
        m.pair(f"{pd}.input_convs.{i}.gn", f"{dec}.input_projections.{i}.1")
    for n in range(spec.encoder_layers):
        src, dst = f"{pd}.encoder.layers.{n}", f"{dec}.encoder.layers.{n}"
        for part in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            m.pair(f"{src}.attentions.0.{part}", f"{dst}.self_attn.{part}")
        m.pair(f"{src}.norms.0", f"{dst}.self_attn_layer_norm")
        m.pair(f"{src}.ffns.0.layers.0.0", f"{dst}.fc1")
        m.pair(f"{src}.ffns.0.layers.1", f"{dst}.fc2")
        m.pair(f"{src}.norms.1", f"{dst}.final_layer_norm")
    m.copy(f"{pd}.level_encoding.weight", f"{dec}.level_embed")
    m.copy(f"{pd}.lateral_convs.0.conv.weight", f"{dec}.adapter_1.0.weight")
    m.pair(f"{pd}.lateral_convs.0.gn", f"{dec}.adapter_1.1")
    m.copy(f"{pd}.output_convs.0.conv.weight", f"{dec}.layer_1.0.weight")
    m.pair(f"{pd}.output_convs.0.gn", f"{dec}.layer_1.1")
    m.pair(f"{pd}.mask_feature", f"{dec}.mask_projection")

    td, tm = "panoptic_head.transformer_decoder", "model.transformer_module"
    for n in range(spec.decoder_layers):
        src, dst = f"{td}.layers.{n}", f"{tm}.decoder.layers.{n}"
        m.copy(f"{src}.attentions.0.attn.in_proj_weight", f"{dst}.cross_attn.in_proj_weight")
        m.copy(f"{src}.attentions.0.attn.in_proj_bias", f"{dst}.cross_attn.in_proj_bias")
        m.pair(f"{src}.attentions.0.attn.out_proj", f"{dst}.cross_attn.out_proj")
        m.split3(f"{src}.attentions.1.attn.", tuple(f"{dst}.self_attn.{p}_proj" for p in "qkv"),  # type: ignore[arg-type]
                 weight="in_proj_weight", bias="in_proj_bias")
        m.pair(f"{src}.attentions.1.attn.out_proj", f"{dst}.self_attn.out_proj")
        for k, name in enumerate(("cross_attn_layer_norm", "self_attn_layer_norm", "final_layer_norm")):
            m.pair(f"{src}.norms.{k}", f"{dst}.{name}")
        m.pair(f"{src}.ffns.0.layers.0.0", f"{dst}.fc1")
        m.pair(f"{src}.ffns.0.layers.1", f"{dst}.fc2")
    m.pair(f"{td}.post_norm", f"{tm}.decoder.layernorm")
    m.copy("panoptic_head.query_embed.weight", f"{tm}.queries_embedder.weight")
    m.copy("panoptic_head.query_feat.weight", f"{tm}.queries_features.weight")
    m.copy("panoptic_head.level_embed.weight", f"{tm}.level_embed.weight")
    m.pair("panoptic_head.cls_embed", "class_predictor")
    for k, src in enumerate((0, 2, 4)):  # Linear, ReLU, Linear, ReLU, Linear
        m.pair(f"panoptic_head.mask_embed.{src}", f"{tm}.decoder.mask_predictor.mask_embedder.{k}.0")
    m.out["criterion.empty_weight"] = torch.cat([torch.ones(spec.num_classes), torch.tensor([spec.no_object_weight])])

    unused = sorted(set(source) - m.used)
    if unused:
        raise ValueError(f"{len(unused)} mmdet keys have no place in the transformers model, e.g. {unused[:5]}")
    return m.out


def _load_mmdet_state(path: Path) -> dict[str, Tensor]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the pickle holds something beyond tensors and plain types
        raise ValueError(f"{path}: not a loadable mmdet checkpoint with weights_only=True ({exc})") from exc
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(k.startswith("panoptic_head.") for k in state):
        raise ValueError(f"{path}: no mmdet Mask2Former state_dict (expected 'backbone.*' and 'panoptic_head.*' keys)")
    return state


def convert_checkpoint(source: str | Path, out_dir: str | Path, *, spec: MMDetMask2FormerSpec = GENEVAL_SPEC,
                       id2label: Mapping[int, str] | None = None) -> Path:
    """Convert an mmdet checkpoint file into a ``save_pretrained`` folder (plus ``conversion.json`` with the
    source's sha256 and ``geneval_checkpoint``: whether it is GenEval's own file), loading it strictly into a freshly
    built transformers model first."""
    from transformers import Mask2FormerForUniversalSegmentation

    source, out_dir = Path(source), Path(out_dir)
    if not source.is_file():
        raise FileNotFoundError(f"mmdet checkpoint not found: {source}")
    state = convert_state_dict(_load_mmdet_state(source), spec)
    model = Mask2FormerForUniversalSegmentation(hf_config(spec, id2label=id2label)).eval()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"the installed transformers' Mask2Former layout differs: missing {missing[:5]}, unexpected "
                         f"{extra[:5]} (the converter targets transformers 5.x names)")
    wrong = [k for k in expected if expected[k].shape != state[k].shape]
    if wrong:
        raise ValueError(f"shape mismatch for {wrong[:5]}: the checkpoint is not {spec}")
    model.load_state_dict(state, strict=True)
    model.save_pretrained(out_dir)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    record = {"source": source.name, "source_sha256": digest, "spec": asdict(spec), "converter": __name__,
              # only these weights may be reported as `geneval`; anything else is a differently named metric
              "geneval_checkpoint": digest.startswith(GENEVAL_SHA256_PREFIX) and spec == GENEVAL_SPEC}
    (out_dir / "conversion.json").write_text(json.dumps(record, indent=2))
    logger.info("converted %s (%d tensors) into %s", source.name, len(state), out_dir)
    return out_dir


GENEVAL_METRIC = "geneval"
OTHER_DETECTOR_METRIC = "geneval_hfm2f"


def is_geneval_detector(folder: str | Path) -> bool:
    """Whether ``folder`` holds GenEval's own detector: converted by :func:`convert_checkpoint` from the benchmark's
    checkpoint (its ``conversion.json`` says ``geneval_checkpoint: true``)."""
    record_path = Path(folder) / "conversion.json"
    if not record_path.is_file():
        return False
    try:
        record = json.loads(record_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{record_path}: not a conversion record ({exc})") from exc
    return isinstance(record, dict) and record.get("geneval_checkpoint") is True


def geneval_metric_name(detector_dir: str | Path, label: str | None = None) -> str:
    """The name GenEval scores are reported under: ``geneval`` only with GenEval's own detector (comparable with
    published numbers), ``geneval_hfm2f`` with any other Mask2Former folder; an explicit ``label`` is kept unless it
    claims ``geneval`` for another detector, which is refused."""
    genuine = is_geneval_detector(detector_dir)
    if label is None or label == "":
        return GENEVAL_METRIC if genuine else OTHER_DETECTOR_METRIC
    if label == GENEVAL_METRIC and not genuine:
        raise ValueError(
            f"label 'geneval' is reserved for GenEval's own detector, and {detector_dir} is not one (no conversion.json "
            f"with geneval_checkpoint=true from `infinity-eval convert-geneval-detector`); report it as "
            f"'{OTHER_DETECTOR_METRIC}'"
        )
    return label
