"""bench/lora_new_word.py in its tiny mode (a few examples, one LoRA step): every stage runs on the demo model, the
new shape word reaches the text encoder as <unk>, and the vocabulary is back to the trained one afterwards."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from bitwise_ar.cli import DEMO_MODEL_DIR
from infinity_shapes import SHAPES

BENCH = Path(__file__).resolve().parents[3] / "bench" / "lora_new_word.py"

pytestmark = pytest.mark.skipif(not (DEMO_MODEL_DIR / "pipeline.json").is_file(), reason="no packaged demo model")


def _bench():
    spec = importlib.util.spec_from_file_location("lora_new_word", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_measures_every_stage(tmp_path):
    out = tmp_path / "new_word.json"
    argv = ["--tiny", "--threads", str(torch.get_num_threads()), "--work-dir", str(tmp_path / "work"), "--output", str(out)]
    assert _bench().main(argv) == 0
    result = json.loads(out.read_text())
    assert result["new_word"] == "semicircle" and list(SHAPES) == ["circle", "square", "triangle"]
    # the frozen word-level text encoder has no row for the new word: it reads <unk>, singular and plural alike
    assert result["prompt_tokens"].count("<unk>") == 2 and result["unknown_words"] == ["semicircles", "semicircle"]
    assert result["text_embedding_rows"] == result["text_vocabulary"]
    assert result["steps"] == 1 and 0 < result["adapter_params"] < result["base_params"]
    assert 0 < result["training_examples_with_new_word"] < result["training_examples"] == 6
    assert (tmp_path / "work" / "run" / "lora" / "adapter_model.safetensors").is_file()
    ceiling = result["tokenizer_ceiling"]
    assert ceiling["rendered"]["overall"] == 1.0  # the scorer passes every rendered scene with the new shape
    drawn = sum(n for call, n in ceiling["rendered"]["called"].items() if call.startswith("semicircle ->"))
    assert ceiling["rendered"]["called"]["semicircle -> semicircle"] == drawn > 0
    for when in ("before", "after"):
        assert result[when]["new_word"]["prompts"] > 0
        assert result[when]["old_words"]["prompts"] == result[when]["old_words_demo_scorer"]["prompts"] == 6
        assert all(0.0 <= result[when][arm]["overall"] <= 1.0 for arm in ("new_word", "old_words"))
