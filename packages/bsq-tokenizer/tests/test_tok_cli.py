"""The ``bsq-tokenizer`` CLI end to end on a tiny model, and its one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bsq_tokenizer import BSQTokenizer, TokenizerConfig, loading
from bsq_tokenizer.bitfile import load_codes
from bsq_tokenizer.cli import main
from PIL import Image


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("cli")
    tiny_model.save_pretrained(root / "tok")
    g = np.random.default_rng(0)
    Image.fromarray(g.integers(0, 256, (45, 70, 3), dtype=np.uint8)).save(root / "photo.png")
    Image.fromarray(g.integers(0, 256, (20, 20), dtype=np.uint8)).save(root / "gray.png")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return root


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_reconstruct_encode_decode_info(workdir, capsys, tiny_model):
    side = workdir / "out" / "side.png"
    code, out, err = _run(capsys, "reconstruct", workdir / "photo.png", "--weights", workdir / "tok", "-o", side)
    assert code == 0, err
    assert "PSNR" in out and "bpp" in out
    assert Image.open(side).size == (140, 45)  # original | reconstruction

    packed = workdir / "photo.bsqb"
    code, out, err = _run(capsys, "encode", workdir / "photo.png", "--weights", workdir / "tok", "-o", packed)
    assert code == 0, err
    codes = load_codes(packed)
    expected = tiny_model.encode(Image.open(workdir / "photo.png"))
    assert all(torch.equal(a, b) for a, b in zip(codes.bits, expected.bits))  # lossless bits through the file

    decoded = workdir / "decoded.png"
    code, out, err = _run(capsys, "decode", packed, "--weights", workdir / "tok", "-o", decoded)
    assert code == 0, err
    direct = tiny_model.decode(expected)
    from bsq_tokenizer.images import to_uint8

    assert np.array_equal(np.asarray(Image.open(decoded)), to_uint8(direct)[0])
    code, out, _ = _run(
        capsys, "decode", packed, "--weights", workdir / "tok", "--upto-scale", "2", "-o", workdir / "c.png"
    )
    assert code == 0 and "2/" in out

    code, out, _ = _run(capsys, "info", packed)
    assert code == 0 and "45" in out and "d=8" in out
    code, out, _ = _run(capsys, "info", workdir / "tok")
    assert code == 0 and "d=8" in out


def test_convert_official(workdir, capsys, official_like_model):
    model = official_like_model
    d = model.config.codebook_dim
    mask = 2 ** torch.arange(d - 1, -1, -1)
    torch.save(
        {"vae": {**model.state_dict(), "quantizer.lfq.mask": mask, "quantize.lfq.mask": mask}},
        workdir / "official_like.pth",
    )
    code, _out, err = _run(capsys, "convert-official", workdir / "official_like.pth", "-o", workdir / "converted")
    assert code == 0, err
    loaded = BSQTokenizer.from_pretrained(workdir / "converted")
    assert loaded.config.replace(description="") == model.config.replace(description="")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    # the same file used directly as --weights gives the same reconstruction as the in-memory model
    out_png = workdir / "r.png"
    code, _out, err = _run(
        capsys,
        "reconstruct",
        workdir / "photo.png",
        "--weights",
        workdir / "official_like.pth",
        "--max-side",
        "0",
        "-o",
        out_png,
    )
    assert code == 0, err
    from bsq_tokenizer.images import to_uint8

    expected = to_uint8(model.reconstruct(Image.open(workdir / "photo.png")))[0]
    assert np.array_equal(np.asarray(Image.open(out_png))[:, 70:], expected)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reconstruct", "{w}/missing.png", "--weights", "{w}/tok"], "not found"),
        (["reconstruct", "{w}/corrupt.jpg", "--weights", "{w}/tok"], "cannot read image file"),
        (["encode", "{w}/corrupt.jpg", "--weights", "{w}/tok", "-o", "{w}/x.bsqb"], "cannot read image file"),
        (["reconstruct", "{w}/photo.png", "--weights", "{w}/nowhere"], "not found"),
        (["reconstruct", "{w}/photo.png", "--weights", "{w}/official.pth", "--preset", "d99"], "unknown preset"),
        (["decode", "{w}/truncated.bsqb", "--weights", "{w}/tok", "-o", "{w}/y.png"], "truncated"),
        (["decode", "{w}/photo.png", "--weights", "{w}/tok", "-o", "{w}/y.png"], "magic"),
        (
            ["reconstruct", "{w}/photo.png", "--weights", "{w}/other_arch.pth", "--preset", "debug"],
            "different architecture",
        ),
        (["reconstruct"], "give an image file"),
    ],
)
def test_bad_input_is_one_line_error(workdir, capsys, tiny_model, argv, message):
    if not (workdir / "truncated.bsqb").exists():
        tiny_model.save_pretrained(workdir / "tok")
        data = tiny_model.encode(Image.open(workdir / "photo.png")).pack()
        (workdir / "truncated.bsqb").write_bytes(data[: len(data) // 2])
        torch.save({"vae": tiny_model.state_dict()}, workdir / "official.pth")
        other = BSQTokenizer(TokenizerConfig(**{**tiny_model.config.to_dict(), "codebook_dim": 4}))
        torch.save({"vae": other.state_dict()}, workdir / "other_arch.pth")
    code, _out, err = _run(capsys, *[a.format(w=workdir) for a in argv])
    assert code == 1
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_demo_weights_is_a_clear_error(workdir, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(loading, "DEMO_WEIGHTS_DIR", tmp_path / "no_demo")
    code, _, err = _run(capsys, "reconstruct", workdir / "photo.png")
    assert code == 1 and "--weights" in err
    code, _, err = _run(capsys, "reconstruct", "--demo", "--weights", workdir / "tok")
    assert code == 1 and "demo image" in err


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_demo_flag_uses_packaged_weights_and_photo(workdir, capsys, monkeypatch, tmp_path, tiny_model):
    demo = tmp_path / "demo_weights"
    tiny_model.save_pretrained(demo)
    Image.open(workdir / "photo.png").save(demo / "example.png")
    monkeypatch.setattr(loading, "DEMO_WEIGHTS_DIR", demo)
    out = tmp_path / "demo.png"
    code, stdout, err = _run(capsys, "reconstruct", "--demo", "-o", out)
    assert code == 0, err
    assert "PSNR" in stdout and Image.open(out).size == (140, 45)


@pytest.mark.skipif(not (loading.DEMO_WEIGHTS_DIR / "config.json").is_file(), reason="no packaged demo weights yet")
def test_packaged_demo_runs(capsys, tmp_path):
    code, stdout, err = _run(capsys, "reconstruct", "--demo", "-o", tmp_path / "demo.png")
    assert code == 0, err
    assert "PSNR" in stdout
