"""GenEval's mmdet Mask2Former -> transformers converter on a synthetic checkpoint with mmdet 2.x's key layout (tiny
dims): every source key consumed and every target key filled (the values are a permutation of the source's), layer
for layer, and forward equivalence of the sub-modules whose layout changes (patch merging, window attention,
decoder self-attention) against reference implementations of mmdet's computation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from infinity_eval.geneval_convert import (
    GENEVAL_SPEC,
    MMDetMask2FormerSpec,
    convert_checkpoint,
    convert_state_dict,
    swin_relative_position_index,
)
from mmdet_mask2former import mmdet_relative_position_index, mmdet_shapes, synthetic_checkpoint

transformers = pytest.importorskip("transformers", reason="needs the models extra")

TINY = MMDetMask2FormerSpec(embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 2), window_size=4,
                            pretrain_image_size=64, feat_channels=32, num_queries=10, encoder_layers=1, encoder_ffn=64,
                            decoder_layers=2, decoder_ffn=64, attention_heads=2)
DEFAULTS = ("model.pixel_level_module.encoder.swin.layernorm.weight", "model.pixel_level_module.encoder.swin.layernorm.bias",
            "criterion.empty_weight")  # target keys mmdet has no counterpart for


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, object, Path]:
    root = tmp_path_factory.mktemp("m2f")
    checkpoint = synthetic_checkpoint(TINY)
    torch.save(checkpoint, root / "mask2former_tiny.pth")
    out = convert_checkpoint(root / "mask2former_tiny.pth", root / "hf", spec=TINY)
    model = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(out).eval()
    return checkpoint["state_dict"], model, out


def test_mmdet_window_index_is_the_swin_formula() -> None:
    for window in (4, 7, 12):
        assert torch.equal(mmdet_relative_position_index(window), swin_relative_position_index(window))


def test_geneval_layout_sizes() -> None:
    shapes = mmdet_shapes(GENEVAL_SPEC)
    params = sum(torch.Size(s).numel() for k, s in shapes.items() if not k.endswith("relative_position_index"))
    assert shapes["panoptic_head.cls_embed.weight"] == (81, 256)
    assert shapes["panoptic_head.pixel_decoder.input_convs.0.conv.weight"] == (256, 768, 1, 1)
    assert len([k for k in shapes if k.endswith("attn.w_msa.qkv.weight")]) == 24  # Swin-S: 2 + 2 + 18 + 2 blocks
    assert 68e6 < params < 70e6  # Mask2Former Swin-S: 69M parameters (mmdet model zoo)


def test_every_key_consumed_and_filled(converted) -> None:
    source, model, out = converted
    target = model.state_dict()
    # a converted model holds exactly the source's numbers (split and permuted), plus the documented defaults
    src = torch.cat([v.flatten() for k, v in source.items() if not k.endswith("relative_position_index")])
    dst = torch.cat([v.flatten() for k, v in target.items() if k not in DEFAULTS])
    assert torch.equal(src.sort().values, dst.sort().values)
    assert torch.equal(target["criterion.empty_weight"], torch.tensor([1.0] * 80 + [0.1]))
    record = json.loads((out / "conversion.json").read_text())
    assert record["spec"]["depths"] == [1, 2, 1, 1] and record["geneval_checkpoint"] is False  # not GenEval's file


def test_layer_for_layer(converted) -> None:
    source, model, _ = converted
    t = model.state_dict()
    swin = "model.pixel_level_module.encoder.swin.encoder.layers"
    qkv = source["backbone.stages.1.blocks.1.attn.w_msa.qkv.weight"]
    assert torch.equal(t[f"{swin}.1.blocks.1.attention.k_proj.weight"], qkv[32:64])
    assert torch.equal(t[f"{swin}.1.blocks.1.attention.relative_position_bias.relative_position_bias_table"],
                       source["backbone.stages.1.blocks.1.attn.w_msa.relative_position_bias_table"])
    assert torch.equal(t["model.pixel_level_module.encoder.hidden_states_norms.stage3.bias"], source["backbone.norm2.bias"])
    pd = "panoptic_head.pixel_decoder"
    assert torch.equal(t["model.pixel_level_module.decoder.input_projections.2.0.weight"], source[f"{pd}.input_convs.2.conv.weight"])
    assert torch.equal(t["model.pixel_level_module.decoder.encoder.layers.0.self_attn.sampling_offsets.bias"],
                       source[f"{pd}.encoder.layers.0.attentions.0.sampling_offsets.bias"])
    assert torch.equal(t["model.pixel_level_module.decoder.level_embed"], source[f"{pd}.level_encoding.weight"])
    dec = "model.transformer_module.decoder.layers.1"
    td = "panoptic_head.transformer_decoder.layers.1"
    assert torch.equal(t[f"{dec}.cross_attn.in_proj_weight"], source[f"{td}.attentions.0.attn.in_proj_weight"])
    assert torch.equal(t[f"{dec}.self_attn.v_proj.bias"], source[f"{td}.attentions.1.attn.in_proj_bias"][64:])
    assert torch.equal(t[f"{dec}.cross_attn_layer_norm.weight"], source[f"{td}.norms.0.weight"])
    assert torch.equal(t[f"{dec}.final_layer_norm.weight"], source[f"{td}.norms.2.weight"])
    assert torch.equal(t["model.transformer_module.decoder.mask_predictor.mask_embedder.2.0.weight"],
                       source["panoptic_head.mask_embed.4.weight"])
    assert torch.equal(t["model.transformer_module.queries_embedder.weight"], source["panoptic_head.query_embed.weight"])
    assert torch.equal(t["class_predictor.bias"], source["panoptic_head.cls_embed.bias"])


def test_patch_merging_matches_mmdet_unfold(converted) -> None:
    source, model, _ = converted
    merge = model.model.pixel_level_module.encoder.swin.encoder.layers[0].downsample
    C, H, W = TINY.embed_dim, 6, 8
    x = torch.randn(2, H * W, C, generator=torch.Generator().manual_seed(1))
    # mmdet 2.x PatchMerging: (B, C, H, W) -> nn.Unfold(2, stride 2) -> (B, L, 4C) -> norm -> reduction
    unfolded = torch.nn.functional.unfold(x.view(2, H, W, C).permute(0, 3, 1, 2), kernel_size=2, stride=2).transpose(1, 2)
    p = "backbone.stages.0.downsample"
    reference = torch.nn.functional.layer_norm(unfolded, (4 * C,), source[f"{p}.norm.weight"], source[f"{p}.norm.bias"])
    reference = reference @ source[f"{p}.reduction.weight"].T
    with torch.no_grad():
        assert torch.allclose(merge(x, (H, W)), reference, atol=1e-5)


def test_window_attention_matches_mmdet(converted) -> None:
    source, model, _ = converted
    block = model.model.pixel_level_module.encoder.swin.encoder.layers[1].blocks[0]
    src = "backbone.stages.1.blocks.0.attn.w_msa"
    heads, C, N = 2, 32, TINY.window_size**2
    x = torch.randn(3, N, C, generator=torch.Generator().manual_seed(2))
    # mmdet WindowMSA: qkv -> heads -> (q * d^-0.5) k^T + table[index] -> softmax -> v -> proj
    q, k, v = (x @ source[f"{src}.qkv.weight"].T + source[f"{src}.qkv.bias"]).view(3, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    bias = source[f"{src}.relative_position_bias_table"][source[f"{src}.relative_position_index"].flatten()]
    attn = (q * (C // heads) ** -0.5) @ k.transpose(-2, -1) + bias.view(N, N, heads).permute(2, 0, 1)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(3, N, C)
    reference = out @ source[f"{src}.proj.weight"].T + source[f"{src}.proj.bias"]
    with torch.no_grad():
        result = block.attention(x)
    result = result[0] if isinstance(result, tuple) else result
    assert torch.allclose(result, reference, atol=1e-5)


def test_decoder_self_attention_matches_torch_mha(converted) -> None:
    source, model, _ = converted
    layer = model.model.transformer_module.decoder.layers[0]
    src = "panoptic_head.transformer_decoder.layers.0.attentions.1.attn"
    mha = torch.nn.MultiheadAttention(32, 2)  # mmcv MultiheadAttention wraps this (batch_first=False)
    mha.load_state_dict({"in_proj_weight": source[f"{src}.in_proj_weight"], "in_proj_bias": source[f"{src}.in_proj_bias"],
                         "out_proj.weight": source[f"{src}.out_proj.weight"], "out_proj.bias": source[f"{src}.out_proj.bias"]})
    generator = torch.Generator().manual_seed(3)
    x, pos = torch.randn(2, 10, 2, 32, generator=generator)  # (queries, batch, C) features and query positions
    with torch.no_grad():  # mmcv adds the query position to queries and keys, not to values
        reference = mha(x + pos, x + pos, x, need_weights=False)[0]
        result = layer.self_attn(hidden_states=x, position_embeddings=pos)[0]
    if result.shape != reference.shape:
        result = result.permute(1, 0, 2)
    assert torch.allclose(result, reference, atol=1e-5)


def test_converted_model_runs(converted) -> None:
    _, model, _ = converted
    with torch.no_grad():
        outputs = model(pixel_values=torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4)))
    assert outputs.class_queries_logits.shape == (1, 10, 81)
    assert torch.isfinite(outputs.masks_queries_logits).all()


def test_bad_checkpoints(tmp_path: Path) -> None:
    state = synthetic_checkpoint(TINY)["state_dict"]
    with pytest.raises(ValueError, match="have no place"):
        convert_state_dict({**state, "panoptic_head.extra.weight": torch.zeros(1)}, TINY)
    del state["panoptic_head.query_feat.weight"]
    with pytest.raises(ValueError, match=r"has no 'panoptic_head\.query_feat\.weight'"):
        convert_state_dict(state, TINY)
    bad = synthetic_checkpoint(TINY)["state_dict"]
    bad["backbone.stages.0.blocks.0.attn.w_msa.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    with pytest.raises(ValueError, match="differs from the Swin formula"):
        convert_state_dict(bad, TINY)
    torch.save({"state_dict": {"backbone.x": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no mmdet Mask2Former state_dict"):
        convert_checkpoint(tmp_path / "other.pth", tmp_path / "out", spec=TINY)
    with pytest.raises(ValueError, match=r"shape mismatch"):
        torch.save(synthetic_checkpoint(TINY), tmp_path / "tiny.pth")
        convert_checkpoint(tmp_path / "tiny.pth", tmp_path / "out", spec=MMDetMask2FormerSpec(**{**TINY.__dict__, "num_queries": 12}))


def test_converted_folder_is_the_geneval_detector(converted) -> None:
    from infinity_eval.geneval.detector import Mask2FormerDetector
    from infinity_eval.geneval.prompts import object_names
    from PIL import Image

    _, _, out = converted
    detector = Mask2FormerDetector.from_pretrained(out, name="geneval")
    detections = detector(Image.new("RGB", (48, 40), (120, 30, 200)))
    assert set(detections) <= set(object_names())
    assert sum(len(v) for v in detections.values()) == 100  # mmdet keeps the top 100 of the 10 x 80 query-class pairs


def test_cli_refuses_a_checkpoint_that_is_not_swin_s(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from infinity_eval.cli import main

    torch.save(synthetic_checkpoint(TINY), tmp_path / "tiny.pth")
    assert main(["convert-geneval-detector", str(tmp_path / "tiny.pth"), str(tmp_path / "out")]) == 2
    assert "differs from the Swin formula for window 7" in capsys.readouterr().err  # the CLI converts GenEval's Swin-S
    assert main(["convert-geneval-detector", str(tmp_path / "missing.pth"), str(tmp_path / "out")]) == 2
    assert "mmdet checkpoint not found" in capsys.readouterr().err


def test_only_the_converted_geneval_checkpoint_is_reported_as_geneval(converted, tmp_path: Path) -> None:
    from infinity_eval.scorers import GenEvalMetric

    _, _, out = converted  # converted by our converter, but from a checkpoint that is not GenEval's
    assert GenEvalMetric(out, tmp_path).name == "geneval_hfm2f"
    plain = tmp_path / "plain"  # any Mask2Former folder without a conversion record
    plain.mkdir()
    assert GenEvalMetric(plain, tmp_path).name == "geneval_hfm2f"
    genuine = tmp_path / "genuine"  # the record convert_checkpoint writes for GenEval's own file
    genuine.mkdir()
    record = json.loads((out / "conversion.json").read_text())
    (genuine / "conversion.json").write_text(json.dumps({**record, "geneval_checkpoint": True}))
    assert GenEvalMetric(genuine, tmp_path).name == "geneval"
    assert GenEvalMetric(genuine, tmp_path, name="geneval").name == "geneval"
    assert GenEvalMetric(out, tmp_path, name="geneval_swin_l").name == "geneval_swin_l"  # other labels are the user's
    for folder in (out, plain):
        with pytest.raises(ValueError, match=rf"label 'geneval' is reserved for GenEval's own detector, and {folder} is "
                                             r"not one .*report it as 'geneval_hfm2f'$"):
            GenEvalMetric(folder, tmp_path, name="geneval")
    (plain / "conversion.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"conversion.json: not a conversion record"):
        GenEvalMetric(plain, tmp_path)
