"""The T5 tokenizer path: a sentencepiece T5 vocabulary saved with save_pretrained and loaded through our wrapper
(AutoTokenizer) gives the ids of the official slow ``T5Tokenizer(legacy=True)`` semantics, computed here with the
``sentencepiece`` package itself: split on special tokens, ``SentencePieceProcessor.encode`` each chunk (dummy prefix
included, also right after a special token: that is what legacy means), append ``</s>``."""

from __future__ import annotations

import io
import re

import pytest

spm = pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")

from bitwise_ar.text_encoder import T5TextEncoder  # noqa: E402

CORPUS = """A photo of a cat sitting on a red chair.
Two blue squares to the left of a green star!
An astronaut riding a horse on the moon, digital art, 4k, highly detailed.
The quick brown fox jumps over the lazy dog; café naïve résumé — “quotes” and 'apostrophes'.
Three yellow circles above a purple triangle in the style of Van Gogh.""".splitlines() * 20

PROMPTS = [
    "A photo of a cat", "a  red   cat ", "  leading spaces", "tab\tand\nnewline", "café naïve", "ÉMOJI 🐱 猫 🐱🐱",
    "digits 1234 and 4k", "“quotes” — dash", "Ｆｕｌｌｗｉｄｔｈ", "a\u00a0b", "Van Gogh's", "end.",
    "hello</s> world", "hello</s>world", "x <extra_id_0> y", "<extra_id_7>y", "A photo</s>",
]
EXTRA_IDS = 100


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    """A tiny unigram model with T5's layout: <pad> 0, </s> 1, <unk> 2, no <s>; nmt_nfkc normalisation."""
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=proto, vocab_size=80, model_type="unigram", pad_id=0, eos_id=1,
        unk_id=2, bos_id=-1, character_coverage=1.0, normalization_rule_name="nmt_nfkc", num_threads=1, minloglevel=2,
    )
    directory = tmp_path_factory.mktemp("spm")
    (directory / "spiece.model").write_bytes(proto.getvalue())
    return directory, spm.SentencePieceProcessor(model_proto=proto.getvalue())


def legacy_slow_ids(sp, text: str) -> list[int]:
    """The slow T5Tokenizer(legacy=True) ids, from sentencepiece directly (T5 appends <extra_id_N> in reverse)."""
    specials = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    specials.update({f"<extra_id_{n}>": sp.get_piece_size() + EXTRA_IDS - 1 - n for n in range(EXTRA_IDS)})
    ids: list[int] = []
    for chunk in re.split(r"(</s>|<pad>|<unk>|<extra_id_\d+>)", text):
        if chunk in specials:
            ids.append(specials[chunk])
        elif chunk:
            ids.extend(sp.encode(chunk))
    return [*ids, 1]


def test_saved_sentencepiece_t5_tokenizer_matches_slow_legacy_ids(spm_model, tmp_path):
    spm_dir, sp = spm_model
    # T5Tokenizer.from_pretrained on a folder holding spiece.model: the slow class on transformers 4.x, the
    # sentencepiece->tokenizers conversion on 5.x (there, T5Tokenizer(vocab_file=...) would ignore the file)
    built = transformers.T5Tokenizer.from_pretrained(str(spm_dir), legacy=True, extra_ids=EXTRA_IDS)
    assert len(built) == sp.get_piece_size() + EXTRA_IDS
    built.save_pretrained(tmp_path / "text_encoder")

    encoder = T5TextEncoder(tmp_path / "text_encoder", max_length=64)
    ids, mask = encoder.tokenize(PROMPTS)
    expected = [legacy_slow_ids(sp, p) for p in PROMPTS]
    got = [row[: int(n)].tolist() for row, n in zip(ids, mask.sum(1), strict=True)]
    mismatches = {p: (g, e) for p, g, e in zip(PROMPTS, got, expected, strict=True) if g != e}
    assert not mismatches
    after_special = expected[PROMPTS.index("hello</s>world")]
    assert sp.id_to_piece(after_special[after_special.index(1) + 1]).startswith("▁")  # legacy: dummy prefix after </s>

    # truncation keeps the first max_length - 1 tokens and the closing </s>, like the official call
    short = T5TextEncoder(tmp_path / "text_encoder", max_length=6)
    with pytest.warns(UserWarning, match="truncated"):
        ids, mask = short.tokenize(["An astronaut riding a horse on the moon"])
    assert ids[0].tolist() == [*legacy_slow_ids(sp, "An astronaut riding a horse on the moon")[:5], 1]
