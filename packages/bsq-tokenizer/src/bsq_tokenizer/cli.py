"""``bsq-tokenizer`` command line: reconstruct, encode, decode, convert-official, info.

Thin by design: parse arguments, call the library, print one result line; errors become one line on stderr and a
non-zero exit code (1 for failures, 2 for usage errors).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger("bsq_tokenizer.cli")


def _add_weights(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        help="tokenizer directory (config.json + model.safetensors) or an official infinity_vae_*.pth; "
        "default: the packaged demo weights",
    )
    parser.add_argument(
        "--preset", help="architecture preset for an official .pth (d16, d24, d32, d64, d32reg, d14-f8-patchify)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bsq-tokenizer", description="Infinity's bitwise multi-scale image tokenizer."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr; tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "reconstruct", help="encode + decode an image; print PSNR and bits per pixel; save a side-by-side"
    )
    p.add_argument("image", nargs="?", help="input image file")
    p.add_argument("--demo", action="store_true", help="use the packaged demo weights and example photo")
    p.add_argument("-o", "--output", help="side-by-side PNG (default: outputs/<name>_reconstruction.png)")
    p.add_argument("--max-side", type=int, default=1024, help="downscale larger images to this longest side (0: never)")
    _add_weights(p)

    p = sub.add_parser("encode", help="encode an image to a packed bit file (.bsqb)")
    p.add_argument("image")
    p.add_argument("-o", "--output", required=True, help="output .bsqb file")
    p.add_argument("--max-side", type=int, default=0, help="downscale larger images to this longest side (0: never)")
    _add_weights(p)

    p = sub.add_parser("decode", help="decode a packed bit file to an image")
    p.add_argument("codes", help=".bsqb file written by `encode`")
    p.add_argument("-o", "--output", required=True, help="output image (PNG recommended)")
    p.add_argument("--upto-scale", type=int, default=None, help="decode only scales 1..K (coarse preview)")
    p.add_argument(
        "--allow-weights-mismatch",
        action="store_true",
        help="decode even if the file records other tokenizer weights than --weights (the image will be wrong)",
    )
    _add_weights(p)

    p = sub.add_parser("convert-official", help="convert an official infinity_vae_*.pth to our directory format")
    p.add_argument("checkpoint", help="official .pth file")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--preset", help="architecture preset (default: inferred from the tensor shapes)")

    p = sub.add_parser("info", help="describe a tokenizer (directory or .pth) or a packed bit file")
    p.add_argument("path", nargs="?", help="tokenizer directory, official .pth, or .bsqb file (default: demo weights)")
    p.add_argument("--preset", help="architecture preset for an official .pth")
    return parser


def _load_image(path: str, max_side: int):
    from .images import load_image

    image = load_image(path)
    if max_side and max(image.size) > max_side:
        from PIL import Image

        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        logger.warning(
            "downscaling %s from %dx%d to %dx%d (--max-side %d)", path, image.width, image.height, *size, max_side
        )
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def _writable(path: str | Path) -> Path:
    """``path`` as a Path, after checking that a file can be created there (so a bad ``-o`` fails before the work)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a directory; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"cannot write {path}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK):
                raise ValueError(f"cannot write {path}: {parent} is not writable")
            break
    return path


def _psnr(a, b) -> float:
    import torch

    mse = torch.mean(((a.float() - b.float()) / 2.0) ** 2).item()  # [-1, 1] -> [0, 1] units
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _cmd_reconstruct(args: argparse.Namespace) -> None:
    import torch

    from .images import save_image, to_image_batch
    from .loading import demo_image_path, load_tokenizer

    if args.image is None:
        if not args.demo:
            raise ValueError("give an image file, or --demo for the packaged example")
        image_path = str(demo_image_path())
    else:
        image_path = args.image
    out = _writable(args.output) if args.output else Path("outputs") / f"{Path(image_path).stem}_reconstruction.png"
    model = load_tokenizer(args.weights, preset=args.preset, device=args.device)
    image = _load_image(image_path, args.max_side)
    x = to_image_batch(image)
    codes = model.encode(x)
    recon = model.decode(codes).float().cpu()
    psnr = _psnr(x, recon)
    save_image(torch.cat([x[0], recon[0]], dim=-1), out)
    height, width = codes.image_size
    print(
        f"PSNR {psnr:.2f} dB | {codes.bpp:.4f} bpp ({codes.num_bits} bits, {codes.num_scales} scales) | "
        f"{width}x{height} | side-by-side (original | reconstruction) -> {out}"
    )


def _cmd_encode(args: argparse.Namespace) -> None:
    from .bitfile import save_codes
    from .loading import load_tokenizer

    out = _writable(args.output)
    model = load_tokenizer(args.weights, preset=args.preset, device=args.device)
    codes = model.encode(_load_image(args.image, args.max_side))
    size = save_codes(codes.to("cpu"), out)
    height, width = codes.image_size
    print(
        f"{codes.num_bits} bits in {codes.num_scales} scales -> {size} bytes ({8 * size / (height * width):.4f} bpp "
        f"incl. header) | {width}x{height} -> {args.output}"
    )


def _cmd_decode(args: argparse.Namespace) -> None:
    from .bitfile import load_codes
    from .images import save_image
    from .loading import load_tokenizer

    out = _writable(args.output)
    codes = load_codes(args.codes)
    model = load_tokenizer(args.weights, preset=args.preset, device=args.device)
    try:
        model.check_codes(codes, allow_weights_mismatch=args.allow_weights_mismatch)
    except ValueError as err:
        raise ValueError(f"{args.codes}: {err}") from None
    if args.allow_weights_mismatch and codes.weights_fingerprint not in (None, model.weights_fingerprint()):
        logger.warning(
            "decoding %s (encoded by weights %s) with weights %s: --allow-weights-mismatch",
            args.codes,
            codes.weights_fingerprint,
            model.weights_fingerprint(),
        )
    images = model.decode(
        codes, upto_scale=args.upto_scale, allow_weights_mismatch=args.allow_weights_mismatch
    ).float().cpu()
    if images.shape[0] == 1:
        save_image(images[0], out)
        written = [out]
    else:
        written = [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(images.shape[0])]
        for image, path in zip(images, written):
            save_image(image, path)
    print(
        f"decoded {len(written)} image(s) {codes.image_size[1]}x{codes.image_size[0]} from "
        f"{args.upto_scale or codes.num_scales}/{codes.num_scales} scales -> {', '.join(map(str, written))}"
    )


def _cmd_convert(args: argparse.Namespace) -> None:
    from .model import BSQTokenizer

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"cannot write {out}: it is a file; the output is a directory")
    _writable(out / "config.json")
    model = BSQTokenizer.from_official(args.checkpoint, args.preset)
    out = model.save_pretrained(out)
    c = model.config
    print(
        f"converted {args.checkpoint} (d={c.codebook_dim}, stride {c.patch_size}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters) -> {out}"
    )


def _cmd_info(args: argparse.Namespace) -> None:
    from .bitfile import MAGIC

    path = Path(args.path) if args.path else None
    is_codes = path is not None and path.suffix == ".bsqb"
    if path is not None and path.is_file():
        with path.open("rb") as handle:
            is_codes = is_codes or handle.read(len(MAGIC)) == MAGIC
    if is_codes:
        from .bitfile import load_codes

        codes = load_codes(path)
        print(
            f"packed bits: {codes.batch_size} image(s) {codes.image_size[1]}x{codes.image_size[0]}, d={codes.codebook_dim}, "
            f"stride {codes.patch_size}, {codes.num_scales} scales {list(codes.schedule)}, {codes.num_bits} bits/image, "
            f"{codes.bpp:.4f} bpp; tokenizer weights {codes.weights_fingerprint or 'not recorded'}"
        )
        return
    from .loading import load_tokenizer

    model = load_tokenizer(path, preset=args.preset)
    c = model.config
    enc = sum(p.numel() for p in model.encoder.parameters())
    dec = sum(p.numel() for p in model.decoder.parameters())
    print(
        f"tokenizer: d={c.codebook_dim} ({c.quantizer}), stride {c.patch_size}, base {c.base_channels} x "
        f"{list(c.channel_multipliers)}, {c.num_res_blocks} res blocks, patchify={c.spatial_patchify}; "
        f"encoder {enc:,} + decoder {dec:,} parameters; weights {model.weights_fingerprint()}"
    )


_COMMANDS = {
    "reconstruct": _cmd_reconstruct,
    "encode": _cmd_encode,
    "decode": _cmd_decode,
    "convert-official": _cmd_convert,
    "info": _cmd_info,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``bsq-tokenizer``; returns the process exit code."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("bsq-tokenizer: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the one place every failure becomes one line (a traceback only with -v)
        if args.verbose:
            traceback.print_exc()
        text = str(err).strip()
        message = text.splitlines()[0] if text else "(no message)"
        if not isinstance(err, (ValueError, OSError, RuntimeError)):  # an unexpected kind: name it
            message = f"{type(err).__name__}: {message}"
        print(f"bsq-tokenizer {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
