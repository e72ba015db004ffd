"""``bitwise-ar`` command line: ``generate`` images from text, ``edit`` an image (in-paint, out-paint, variations),
``convert-official`` checkpoints, ``train`` (the
``python -m bitwise_ar.train`` entry) and ``export`` a training checkpoint to a pipeline directory.

Thin by design: parse, build settings, call one library function, return an exit code. Errors print one line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo_model"


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().replace("x", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must look like 256x256 (height x width), got {text!r}") from None
    return h, w


def _floats(text: str) -> float | list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma-separated list per scale, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _add_model_options(command: argparse.ArgumentParser) -> None:
    """The weights, sampling and device options that ``generate`` and ``edit`` share."""
    command.add_argument("--weights", type=Path, default=None,
                         help=f"pipeline directory (transformer/, tokenizer/, text_encoder/); default: the demo model {DEMO_MODEL_DIR}")
    command.add_argument("--lora", type=Path, default=None,
                         help="LoRA adapter directory (adapter_model.safetensors, ...) trained on these weights; merged in")
    command.add_argument("--seed", type=int, default=1)
    command.add_argument("--cfg", type=_floats, default=None, help="guidance weight, or one per scale (comma-separated)")
    command.add_argument("--tau", type=_floats, default=None, help="temperature, or one per scale (comma-separated)")
    command.add_argument("--top-k", type=int, default=None)
    command.add_argument("--top-p", type=float, default=None)
    command.add_argument("--negative-prompt", default=None)
    command.add_argument("--compile", choices=["auto", "on", "off"], default=None,
                         help="compiled per-scale sampling (auto: on CUDA only; on: also on CPU after a one-off compile)")
    command.add_argument("--previews", type=Path, default=None, help="also write the coarse-to-fine preview strip here")
    command.add_argument("--device", default="cpu")
    command.add_argument("--low-memory", action="store_true", help="bf16 blocks, T5 freed after encoding")
    command.add_argument("--attention-backend", choices=["sdpa", "flash", "auto"], default="sdpa",
                         help="attention kernel: PyTorch SDPA, flash-attn (the flash extra; CUDA + --low-memory), "
                              "or auto (flash-attn when usable, else SDPA)")
    command.add_argument("--vae-tile", type=int, default=None, metavar="N",
                         help="decode in overlapping N x N latent tiles (N x 16 px; e.g. 32) to bound VAE memory (approximate)")
    command.add_argument("--vae-tile-overlap", type=int, default=None, metavar="M",
                         help="latent positions shared by neighbouring tiles (default N // 4)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bitwise-ar", description="Infinity bitwise autoregressive text-to-image")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate an image from a prompt")
    gen.add_argument("prompt", help="text prompt")
    gen.add_argument("-o", "--output", type=Path, default=Path("out.png"), help="output image file (PNG/JPEG)")
    gen.add_argument("--aspect-ratio", default=None, help='width:height such as "16:9", or h/w as a number')
    gen.add_argument("--resolution", default=None, help="0.06M (256px), 0.25M (512px), 0.60M (768px) or 1M (1024px)")
    gen.add_argument("--image-size", type=_parse_size, default=None, help="explicit HxW in pixels (overrides the above)")
    _add_model_options(gen)

    edit = sub.add_parser("edit", help="edit an image: redraw a masked region, extend the canvas or make variations")
    edit.add_argument("image", type=Path, help="the image to edit (PNG/JPEG; size a multiple of the token stride)")
    edit.add_argument("prompt", help="text prompt for the edited image")
    edit.add_argument("--mask", type=Path, default=None,
                      help="binary mask image of the same size: white (255) = redraw, black (0) = keep (inpaint)")
    edit.add_argument("--mode", choices=["inpaint", "outpaint", "variation"], default="inpaint")
    edit.add_argument("--canvas-size", type=_parse_size, default=None, help="outpaint: the new canvas HxW in pixels")
    edit.add_argument("--offset", type=_parse_size, default=None, metavar="TOPxLEFT",
                      help="outpaint: where the image goes on the canvas (default centred)")
    edit.add_argument("--keep-scales", type=int, default=None, help="variation: coarse scales kept (default half)")
    edit.add_argument("--mask-threshold", type=float, default=None,
                      help="a token is redrawn when at least this fraction of its area is masked (default 0.1)")
    edit.add_argument("-o", "--output", type=Path, default=Path("edited.png"), help="output image file")
    _add_model_options(edit)

    conv = sub.add_parser("convert-official", help="convert an official Infinity checkpoint to our format")
    conv.add_argument("source", type=Path, help="official .pth, .safetensors, shard index .json, or a directory of shards")
    conv.add_argument("-o", "--output", type=Path, required=True, help="output directory (config.json + model.safetensors)")
    conv.add_argument("--preset", default=None, help="architecture preset (e.g. infinity-2b, infinity-8b); default: infer")
    conv.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None, help="store weights in this dtype")
    exp = sub.add_parser("export", help="export a training checkpoint (any worker count) to a pipeline directory")
    exp.add_argument("checkpoint", type=Path, help="a checkpoint directory (run.out_dir/checkpoints/step_XXXXXXX or Ray's storage)")
    exp.add_argument("-o", "--output", type=Path, required=True, help="pipeline directory to write")
    exp.add_argument("--text-encoder", type=Path, default=None,
                     help="T5 directory to copy in (default: the run's model.text_encoder)")

    train = sub.add_parser("train", help="train the transformer (python -m bitwise_ar.train): CONFIG [key=value ...] [--ray]")
    train.add_argument("train_args", nargs=argparse.REMAINDER, help="CONFIG.toml [section.key=value ...] [--ray]")
    return parser


def _export(args: argparse.Namespace) -> int:
    from bitwise_ar.train.ray_entry import export_checkpoint  # the training extra, imported only here

    out = export_checkpoint(args.checkpoint, args.output, text_encoder=args.text_encoder)
    print(f"wrote {out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from bitwise_ar.train.__main__ import main as train_main  # the training extra, imported only here

    return train_main(args.train_args)


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """(pipeline, sampling settings) from the shared model options; refuses an output path under a file."""
    import dataclasses

    from bitwise_ar.pipeline import InfinityPipeline

    parent = args.output.parent
    if any(p.is_file() for p in (parent, *parent.parents)):
        raise ValueError(f"cannot write {args.output}: a part of its folder is a file; choose another -o path")
    weights = args.weights or DEMO_MODEL_DIR
    if args.weights is None and not (DEMO_MODEL_DIR / "transformer").is_dir():
        raise FileNotFoundError(
            f"no --weights given and the packaged demo model {DEMO_MODEL_DIR} is not there yet; "
            "pass --weights DIR (a pipeline directory)"
        )
    pipe = InfinityPipeline.from_pretrained(
        weights,
        device=args.device,
        low_memory=args.low_memory,
        vae_tile_size=args.vae_tile,
        vae_tile_overlap=args.vae_tile_overlap,
        attention_backend=args.attention_backend,
        lora=args.lora,
    )
    if args.lora is not None:
        pipe.merge_lora()
    given = {"cfg": args.cfg, "tau": args.tau, "top_k": args.top_k, "top_p": args.top_p, "compile": args.compile}
    overrides = {k: v for k, v in given.items() if v is not None}
    return pipe, dataclasses.replace(pipe.defaults.sampling, **overrides)


def _save(args: argparse.Namespace, out: Any) -> int:
    from bitwise_ar.pipeline import preview_strip

    args.output.parent.mkdir(parents=True, exist_ok=True)
    out.images[0].save(args.output)
    if args.previews is not None:
        args.previews.parent.mkdir(parents=True, exist_ok=True)
        preview_strip(out.previews).save(args.previews)
    for warning in out.warnings:
        print(f"bitwise-ar: warning: {warning}", file=sys.stderr)
    h, w = out.images_tensor.shape[-2:]
    print(f"wrote {args.output} ({w}x{h}, {len(out.schedule)} scales)")
    return 0


def _generate(args: argparse.Namespace) -> int:
    pipe, sampling = _load(args)
    out = pipe(
        args.prompt,
        negative_prompt=args.negative_prompt,
        aspect_ratio=args.aspect_ratio,
        resolution=args.resolution,
        image_size=args.image_size,
        sampling=sampling,
        seed=args.seed,
        previews=args.previews is not None,
        progress=args.verbose,
    )
    return _save(args, out)


def _edit(args: argparse.Namespace) -> int:
    from bsq_tokenizer.images import load_image

    image = load_image(args.image)
    mask = load_image(args.mask).convert("L") if args.mask is not None else None
    pipe, sampling = _load(args)
    threshold = {} if args.mask_threshold is None else {"mask_threshold": args.mask_threshold}
    out = pipe.edit(
        image,
        args.prompt,
        mask=mask,
        mode=args.mode,
        canvas_size=args.canvas_size,
        offset=args.offset,
        keep_scales=args.keep_scales,
        **threshold,
        negative_prompt=args.negative_prompt,
        sampling=sampling,
        seed=args.seed,
        previews=args.previews is not None,
        progress=args.verbose,
    )
    return _save(args, out)


def _convert(args: argparse.Namespace) -> int:
    import torch

    from bitwise_ar.weights import convert_official

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, None: None}[args.dtype]
    out = convert_official(args.source, args.output, args.preset, dtype=dtype)
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handlers = {"generate": _generate, "edit": _edit, "convert-official": _convert, "export": _export, "train": _train}
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError, ImportError, OSError) as err:
        print(f"bitwise-ar: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
