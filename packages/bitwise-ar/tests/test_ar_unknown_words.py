"""Words the text encoder does not know are reported: in the pipeline output and on the CLI's stderr."""

from __future__ import annotations

import pytest
from bitwise_ar.cli import main
from bitwise_ar.pipeline import InfinityPipeline
from bitwise_ar.testing import TINY_VOCABULARY, build_tiny_pipeline


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("unknown") / "model", seed=0)


def test_unknown_words_are_found_per_prompt_and_reported_once(tiny_dir):
    pipe = InfinityPipeline.from_pretrained(tiny_dir)
    assert "zebra" not in TINY_VOCABULARY and "giraffe" not in TINY_VOCABULARY
    prompts = ["two red circles", "a Zebra and a giraffe, and a zebra", "a Zebra and a giraffe, and a zebra"]
    # Case follows the prompt; each word once, in order; known words (any case) are never reported.
    assert pipe.unknown_words(prompts) == [[], ["Zebra", "giraffe", "zebra"], ["Zebra", "giraffe", "zebra"]]
    assert pipe.unknown_words(["TWO RED Circles, to the left"]) == [[]]
    out = pipe(prompts, image_size=(32, 32), seed=0)
    assert out.unknown_words == [[], ["Zebra", "giraffe", "zebra"], ["Zebra", "giraffe", "zebra"]]
    (message,) = out.warnings  # the two identical prompts give one warning
    assert "'Zebra', 'giraffe', 'zebra'" in message and "does not know" in message
    assert pipe(["two red circles"], image_size=(32, 32), seed=0).warnings == []


def test_cli_prints_the_warning_on_stderr(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert main(["generate", "a purple zebra", "--weights", str(tiny_dir), "--image-size", "32x32", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert out.is_file() and "wrote" in captured.out
    (line,) = [line for line in captured.err.splitlines() if "warning" in line]
    assert line.startswith("bitwise-ar: warning: ") and "'zebra'" in line and "'purple'" not in line
    assert main(["generate", "a purple star", "--weights", str(tiny_dir), "--image-size", "32x32", "-o", str(out)]) == 0
    assert "does not know" not in capsys.readouterr().err
