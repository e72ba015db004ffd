"""The README's examples: the python block, training on the `shapes` source, and the recipe end to end (tiny)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from bitwise_ar.pipeline import InfinityPipeline
from bitwise_ar.train.__main__ import main as train_main
from infinity_shapes import ablation, recipe

ROOT = Path(__file__).resolve().parents[3]
README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def _commands(prefix: str) -> list[list[str]]:
    lines = [line.split("#")[0] for block in _blocks("bash") for line in block.splitlines()]
    return [shlex.split(line)[len(shlex.split(prefix)):] for line in lines if line.startswith(prefix)]


def test_python_example_runs():
    (block,) = _blocks("python")
    exec(compile(block, str(README), "exec"), {})


def test_training_on_the_shapes_source(tmp_path, monkeypatch):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    (argv,) = _commands("uv run python -m bitwise_ar.train")
    assert "data.source=shapes" in argv
    assert train_main([*argv, "data.batch_size=2"]) == 0
    manifest = json.loads(next((tmp_path / "outputs" / "shapes_debug" / "checkpoints").glob("step_*/manifest.json")).read_text())
    assert manifest["meta"]["data"]["kind"] == "shapes" and manifest["meta"]["train_config"]["data"]["options"] == {"ordered": True}


@pytest.mark.slow
def test_recipe_and_ablation_commands(tmp_path, capsys):
    """The recipe's command on a tiny budget: every stage runs (a finished one is kept); the result is a scored
    pipeline."""
    recipe_commands = _commands("uv run python -m infinity_shapes.recipe")
    assert [c[0] for c in recipe_commands] == ["WORK_DIR", "WORK_DIR"]
    work = tmp_path / "work"
    # a finished text-encoder stage (2 pretraining steps instead of 800) is kept by the recipe, as on a resume
    recipe.build_demo_text_encoder(str(work / "text_encoder"), pretrain_steps=2)
    tiny = ["--tokenizer-steps", "2", "--eval-prompts", "6", "data.batch_size=2", "run.checkpoint_every=1"]
    first, resume = ([str(work) if a == "WORK_DIR" else a for a in c] for c in recipe_commands)
    assert resume == [*first, "train.steps=N"]  # the second command is the first with a step count (AR resume)
    assert recipe.main([*first, *tiny, "train.steps=1"]) == 0  # the whole recipe, one AR step
    result = json.loads((work / "shapes_eval.json").read_text())
    assert 0.0 <= result["overall"] <= 1.0 and set(result["per_task"]) >= {"single_object"}
    assert InfinityPipeline.from_pretrained(work / "pipeline").defaults.image_size == (64, 64)
    assert (work / "ar_run" / "checkpoints" / "step_0000001" / "manifest.json").is_file()
    (command,) = _commands("uv run python -m infinity_shapes.ablation")
    assert command[:2] == ["WORK_DIR", "teacher_forcing"] and command[1] in ablation.ARMS
    with pytest.raises(SystemExit) as exit_info:
        ablation.main([str(work), "no_such_arm"])
    assert exit_info.value.code == 2 and "unknown arm 'no_such_arm'" in capsys.readouterr().err
