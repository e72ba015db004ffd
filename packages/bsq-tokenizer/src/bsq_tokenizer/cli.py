"""``bsq-tokenizer`` command line: reconstruct, encode, decode, convert-official, info.

Thin by design: parse arguments, call the library, print one result line; errors become one line on stderr and a
non-zero exit code (1 for failures, 2 for usage errors).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
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
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
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
    weights = args.weights
    model = load_tokenizer(weights, preset=args.preset, device=args.device)
    image = _load_image(image_path, args.max_side)
    x = to_image_batch(image)
    codes = model.encode(x)
    recon = model.decode(codes).float().cpu()
    psnr = _psnr(x, recon)
    out = Path(args.output) if args.output else Path("outputs") / f"{Path(image_path).stem}_reconstruction.png"
    save_image(torch.cat([x[0], recon[0]], dim=-1), out)
    height, width = codes.image_size
    print(
        f"PSNR {psnr:.2f} dB | {codes.bpp:.4f} bpp ({codes.num_bits} bits, {codes.num_scales} scales) | "
        f"{width}x{height} | side-by-side (original | reconstruction) -> {out}"
    )


def _cmd_encode(args: argparse.Namespace) -> None:
    from .bitfile import save_codes
    from .loading import load_tokenizer

    model = load_tokenizer(args.weights, preset=args.preset, device=args.device)
    codes = model.encode(_load_image(args.image, args.max_side))
    size = save_codes(codes.to("cpu"), args.output)
    height, width = codes.image_size
    print(
        f"{codes.num_bits} bits in {codes.num_scales} scales -> {size} bytes ({8 * size / (height * width):.4f} bpp "
        f"incl. header) | {width}x{height} -> {args.output}"
    )


def _cmd_decode(args: argparse.Namespace) -> None:
    from .bitfile import load_codes
    from .images import save_image
    from .loading import load_tokenizer

    codes = load_codes(args.codes)
    model = load_tokenizer(args.weights, preset=args.preset, device=args.device)
    images = model.decode(codes, upto_scale=args.upto_scale).float().cpu()
    out = Path(args.output)
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

    model = BSQTokenizer.from_official(args.checkpoint, args.preset)
    out = model.save_pretrained(args.output)
    c = model.config
    print(
        f"converted {args.checkpoint} (d={c.codebook_dim}, stride {c.patch_size}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters) -> {out}"
    )


def _cmd_info(args: argparse.Namespace) -> None:
    from .bitfile import MAGIC

    path = Path(args.path) if args.path else None
    if path is not None and path.is_file() and path.read_bytes()[:4] == MAGIC:
        from .bitfile import load_codes

        codes = load_codes(path)
        print(
            f"packed bits: {codes.batch_size} image(s) {codes.image_size[1]}x{codes.image_size[0]}, d={codes.codebook_dim}, "
            f"stride {codes.patch_size}, {codes.num_scales} scales {list(codes.schedule)}, {codes.num_bits} bits/image, "
            f"{codes.bpp:.4f} bpp"
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
        f"encoder {enc:,} + decoder {dec:,} parameters"
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
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"bsq-tokenizer {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bsq-tokenizer: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
