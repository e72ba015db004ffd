"""``InfinityPipeline``: prompt -> T5 features -> next-scale bits -> tokenizer decode -> RGB images.

Directory layout read by :meth:`InfinityPipeline.from_pretrained` and written by :meth:`save_pretrained`::

    model_dir/
      pipeline.json     {"format": "bitwise-ar-pipeline/1", "sampling": {...}, "resolution": "0.06M",
                         "aspect_ratio": "1:1", "image_size": null}   (default settings; optional)
      transformer/      config.json + model.safetensors      (bitwise_ar save_pretrained)
      tokenizer/        config.json + model.safetensors      (bsq_tokenizer save_pretrained)
      text_encoder/     a Hugging Face T5 checkpoint + tokenizer files (save_pretrained)
      lora/             optional: a LoRA adapter written by a LoRA training run (bitwise_ar.lora; loaded only on request)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from bsq_tokenizer import BSQTokenizer
from bsq_tokenizer.images import to_image_batch
from bsq_tokenizer.schedules import (
    RESOLUTIONS,
    get_scale_schedule,
    nearest_template,
    parse_aspect_ratio,
    schedule_for_latent,
)
from tqdm.auto import tqdm

from bitwise_ar.editing import EDIT_MODES, MASK_THRESHOLD, EditMode, outpaint_canvas, read_mask, token_masks
from bitwise_ar.layout import ScaleLayout
from bitwise_ar.lora import load_adapter, merge_lora_
from bitwise_ar.model import InfinityTransformer, PackedText
from bitwise_ar.model_card import CARD_FILE, ModelCard, read_model_card, render_model_card
from bitwise_ar.sampling import Generators, SamplingConfig, ScaleStep, check_generators, iter_scales

logger = logging.getLogger(__name__)

PIPELINE_FILE = "pipeline.json"
PIPELINE_FORMAT = "bitwise-ar-pipeline/1"
SUBDIRS = ("transformer", "tokenizer", "text_encoder")


class TextEncoder(Protocol):
    def encode(self, prompts: Sequence[str]) -> PackedText: ...


@dataclass(frozen=True, kw_only=True)
class PipelineDefaults:
    """Default generation settings stored in ``pipeline.json``."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    resolution: str = "1M"
    aspect_ratio: str = "1:1"
    image_size: tuple[int, int] | None = None
    """Explicit (H, W) in pixels; overrides resolution/aspect_ratio (any multiple of the token stride)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PIPELINE_FORMAT,
            "sampling": dataclasses.asdict(self.sampling),
            "resolution": self.resolution,
            "aspect_ratio": self.aspect_ratio,
            "image_size": None if self.image_size is None else list(self.image_size),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineDefaults:
        if data.get("format") != PIPELINE_FORMAT:
            raise ValueError(f"pipeline.json format must be {PIPELINE_FORMAT!r}, got {data.get('format')!r}")
        size = data.get("image_size")
        return cls(
            sampling=SamplingConfig(**data.get("sampling", {})),
            resolution=data.get("resolution", "1M"),
            aspect_ratio=data.get("aspect_ratio", "1:1"),
            image_size=None if size is None else (int(size[0]), int(size[1])),
        )


@dataclass
class PipelineOutput:
    """Generated RGB images (PIL), the same as a float tensor in [-1, 1], the bits per scale and optional previews."""

    images: list[Any]
    images_tensor: torch.Tensor
    bits: list[torch.Tensor]
    schedule: tuple[tuple[int, int], ...]
    previews: list[list[Any]] | None = None
    """previews[k][i]: prompt i decoded from scales 1..k+1 (coarse to fine)."""
    unknown_words: list[list[str]] = field(default_factory=list)
    """unknown_words[i]: the words of prompt i that the text encoder does not know (see :meth:`warnings`)."""

    @property
    def warnings(self) -> list[str]:
        """One message per distinct prompt with unknown words (what the CLI, the API and the web page show)."""
        return list(dict.fromkeys(unknown_words_message(w) for w in self.unknown_words if w))


def unknown_words_message(words: Sequence[str]) -> str:
    """The warning for a prompt whose words ``words`` the text encoder does not know."""
    listed = ", ".join(repr(w) for w in words)
    return (
        f"the text encoder does not know {listed}: it reads each as its unknown token, so the image cannot follow "
        "those words"
    )


@dataclass
class EditOutput(PipelineOutput):
    """An edit: the output image plus what it was made from. ``keep_masks[k]`` (1, h_k, w_k) is True where scale k
    kept the source's bits; ``source_bits[k]`` are the source's bits; ``source`` (1, 3, H, W) in [-1, 1] is the
    encoded image (the out-painting canvas for ``mode="outpaint"``) and ``redraw_mask`` (H, W) the pixel mask."""

    source: torch.Tensor | None = None
    source_bits: list[torch.Tensor] = field(default_factory=list)
    keep_masks: list[torch.Tensor] = field(default_factory=list)
    redraw_mask: torch.Tensor | None = None


def to_pil(images_B3HW: torch.Tensor) -> list[Any]:
    """[-1, 1] RGB tensors -> PIL RGB images (uint8 by truncation, like the official code)."""
    from PIL import Image

    u8 = ((images_B3HW.float().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in u8]


def preview_strip(previews: list[list[Any]], index: int = 0, height: int | None = None) -> Any:
    """One image with the coarse-to-fine previews of prompt ``index`` side by side."""
    from PIL import Image

    frames = [scale[index] for scale in previews]
    h = height or frames[-1].height
    frames = [f.resize((max(1, round(f.width * h / f.height)), h), Image.NEAREST) for f in frames]
    strip = Image.new("RGB", (sum(f.width for f in frames), h))
    x = 0
    for f in frames:
        strip.paste(f, (x, 0))
        x += f.width
    return strip


class InfinityPipeline:
    """Text-to-image with an Infinity transformer, a bitwise tokenizer and a text encoder.

    ``vae_tile_size`` (latent positions, e.g. 32 = 512 px at stride 16) decodes the image in overlapping tiles blended
    with linear ramps over ``vae_tile_overlap`` positions (default a quarter tile), bounding the decoder's peak
    activation memory by the tile instead of the image. It is approximate (GroupNorm statistics are per tile, see
    ``bsq_tokenizer.tiling``); ``None`` (default) decodes in one piece.
    """

    def __init__(
        self,
        transformer: InfinityTransformer,
        tokenizer: Any,
        text_encoder: TextEncoder,
        defaults: PipelineDefaults | None = None,
        *,
        vae_tile_size: int | None = None,
        vae_tile_overlap: int | None = None,
        card: ModelCard | None = None,
    ) -> None:
        from bsq_tokenizer.tiling import check_tiling

        check_tiling(vae_tile_size, vae_tile_overlap)  # fail at construction, not after sampling
        tcfg = tokenizer.config
        if tcfg.codebook_dim * (4 if tcfg.spatial_patchify else 1) != transformer.config.codebook_dim or (
            bool(tcfg.spatial_patchify) != transformer.config.spatial_patchify
        ):
            raise ValueError(
                f"tokenizer (d={tcfg.codebook_dim}, spatial_patchify={tcfg.spatial_patchify}) does not match the "
                f"transformer (d={transformer.config.codebook_dim}, spatial_patchify={transformer.config.spatial_patchify}): "
                "bits per token must agree; pair each transformer with the tokenizer it was trained on"
            )
        self.transformer = transformer.eval()
        self.tokenizer = tokenizer.eval()
        self.text_encoder = text_encoder
        self.defaults = defaults or PipelineDefaults()
        self.card = card or ModelCard()
        """What README.md says the model is and how it was trained (written by :meth:`save_pretrained`)."""
        self.vae_tile_size = vae_tile_size
        self.vae_tile_overlap = vae_tile_overlap

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike[str],
        *,
        device: torch.device | str = "cpu",
        low_memory: bool = False,
        text_encoder_dtype: torch.dtype | str | None = None,
        vae_tile_size: int | None = None,
        vae_tile_overlap: int | None = None,
        attention_backend: str = "sdpa",
        lora: str | os.PathLike[str] | None = None,
    ) -> InfinityPipeline:
        """Load the layout in the module docstring.

        ``lora``: an adapter directory (:mod:`bitwise_ar.lora`) to load onto the transformer, unmerged
        (:meth:`load_lora`; call :meth:`merge_lora` to fold it in).

        ``attention_backend``: "sdpa" (default), "flash" (flash-attn; needs ``pip install flash-attn``, CUDA and bf16
        blocks, i.e. ``low_memory``) or "auto" (flash-attn where possible, else SDPA); see
        :meth:`InfinityTransformer.set_attention_backend`.

        Low-memory options: ``low_memory`` casts the blocks to bf16 and releases T5 after each encode;
        ``vae_tile_size`` / ``vae_tile_overlap`` (latent positions) decode in blended tiles (approximate, see the class
        docstring). They are independent: tiling is only on when a tile size is given.
        """
        from bitwise_ar.text_encoder import T5TextEncoder

        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"model directory {directory} not found (expected {', '.join(SUBDIRS)} inside)")
        for sub in SUBDIRS:
            if not (directory / sub).is_dir():
                raise FileNotFoundError(
                    f"{directory / sub} is missing; a pipeline directory holds {', '.join(SUBDIRS)}"
                )
        transformer = InfinityTransformer.from_pretrained(directory / "transformer", device=device)
        if lora is not None:
            load_adapter(transformer, lora)
        if low_memory:
            transformer.cast_blocks(torch.bfloat16)
        transformer.set_attention_backend(attention_backend)
        tokenizer = BSQTokenizer.from_pretrained(directory / "tokenizer", device=device)
        te_dtype = text_encoder_dtype or (torch.bfloat16 if low_memory else torch.float32)
        text_encoder = T5TextEncoder(
            directory / "text_encoder",
            dtype=te_dtype,
            device=device,
            max_length=transformer.config.text_maxlen,
            release_after_encode=low_memory,
        )
        defaults = PipelineDefaults()
        if (directory / PIPELINE_FILE).is_file():
            defaults = PipelineDefaults.from_dict(json.loads((directory / PIPELINE_FILE).read_text()))
        card = read_model_card(directory / CARD_FILE) if (directory / CARD_FILE).is_file() else None
        return cls(
            transformer,
            tokenizer,
            text_encoder,
            defaults,
            vae_tile_size=vae_tile_size,
            vae_tile_overlap=vae_tile_overlap,
            card=card,
        )

    def save_pretrained(
        self, directory: str | os.PathLike[str], text_encoder_dir: str | os.PathLike[str] | None = None
    ) -> Path:
        """Write transformer/, tokenizer/, pipeline.json, the model card README.md (:attr:`card`, the sampling
        defaults, parameter counts) and copy the text encoder directory (if it has one)."""
        import shutil

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(directory / "transformer")
        self.tokenizer.save_pretrained(directory / "tokenizer")
        source = text_encoder_dir or getattr(self.text_encoder, "directory", None)
        if source is not None and Path(source).resolve() != (directory / "text_encoder").resolve():
            shutil.copytree(source, directory / "text_encoder", dirs_exist_ok=True)
        (directory / PIPELINE_FILE).write_text(json.dumps(self.defaults.to_dict(), indent=2) + "\n")
        self.write_model_card(directory)
        return directory

    def write_model_card(self, directory: str | os.PathLike[str]) -> Path:
        """Write only the model card ``README.md`` into ``directory`` (``save_pretrained`` calls this)."""
        directory = Path(directory)
        parameters = {
            "transformer": sum(p.numel() for p in self.transformer.parameters()),
            "tokenizer": sum(p.numel() for p in self.tokenizer.parameters()),
        }
        text = render_model_card(
            self.card, name=directory.resolve().name, defaults=self.defaults.to_dict(), parameters=parameters
        )
        path = directory / CARD_FILE
        path.write_text(text, encoding="utf-8")
        return path

    # ------------------------------------------------------------------ LoRA
    def load_lora(self, directory: str | os.PathLike[str]) -> InfinityPipeline:
        """Load a LoRA adapter directory onto the transformer (unmerged; refused with ValueError when the transformer
        is not the base it was trained on). Returns the pipeline."""
        load_adapter(self.transformer, directory)
        return self

    def merge_lora(self) -> InfinityPipeline:
        """Fold the loaded adapter into the transformer's weights (plain layers again, base speed). Returns self."""
        merge_lora_(self.transformer)
        return self

    # ------------------------------------------------------------------ helpers
    def layout_for(
        self,
        *,
        aspect_ratio: str | float | None = None,
        resolution: str | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> ScaleLayout:
        """The token schedule for an aspect ratio ("16:9" = width:height, or h/w float) and resolution, or (H, W).

        With none of the three given, the pipeline's stored default applies: its explicit ``image_size`` when it has
        one (e.g. a model trained only at 64x64), else its default aspect ratio and resolution.
        """
        if image_size is None and aspect_ratio is None and resolution is None:
            image_size = self.defaults.image_size
        if image_size is not None:
            stride = self.tokenizer.config.patch_size * (2 if self.transformer.config.spatial_patchify else 1)
            height, width = (int(v) for v in image_size)
            if min(height, width) < stride or height % stride or width % stride:
                raise ValueError(
                    f"image size {height}x{width} must be a positive multiple of the token stride {stride} pixels"
                )
            return ScaleLayout.build(schedule_for_latent(height // stride, width // stride))
        resolution = resolution or self.defaults.resolution
        if resolution not in RESOLUTIONS:
            raise ValueError(f"unknown resolution {resolution!r}; choose one of {list(RESOLUTIONS)}")
        ratio = aspect_ratio if aspect_ratio is not None else self.defaults.aspect_ratio
        h_div_w = float(ratio) if isinstance(ratio, int | float) else parse_aspect_ratio(ratio)
        if not (h_div_w > 0 and h_div_w == h_div_w):
            raise ValueError(f"aspect ratio must be positive, got {ratio!r}")
        return ScaleLayout.build(get_scale_schedule(nearest_template(h_div_w), resolution))

    def decode(self, summed_codes: torch.Tensor, *, per_image: bool = False) -> torch.Tensor:
        """Decoder images in [-1, 1] from summed codes (tiled when the pipeline has a ``vae_tile_size``).

        ``per_image`` decodes one image at a time, so each image is bit-identical to decoding it alone (CPU oneDNN
        and cuDNN convolutions pick batch-size-dependent kernels whose sums differ in the last bits).
        """
        if per_image and summed_codes.shape[0] > 1:
            return torch.cat([self.decode(codes[None]) for codes in summed_codes])
        if self.vae_tile_size is None:
            return self.tokenizer.decode_features(summed_codes.float())
        return self.tokenizer.decode_features(
            summed_codes.float(), tile_size=self.vae_tile_size, tile_overlap=self.vae_tile_overlap
        )

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        negative_prompt: str | Sequence[str] | None = None,
        aspect_ratio: str | float | None = None,
        resolution: str | None = None,
        image_size: tuple[int, int] | None = None,
        sampling: SamplingConfig | None = None,
        seed: int | Sequence[int] | None = 0,
        generator: Generators = None,
        previews: bool = False,
        callback: Callable[[ScaleStep], None] | None = None,
        use_cache: bool = True,
        progress: bool = False,
        prefix_bits: Sequence[torch.Tensor] | None = None,
    ) -> PipelineOutput:
        """Generate one image per prompt.

        ``sampling`` defaults to the pipeline's stored settings; randomness comes from ``generator`` (or a CPU
        generator seeded with ``seed``). One generator (or one int seed) serves the whole batch; a list of generators
        (or of seeds), one per prompt, makes image i equal to prompt i generated alone with generator/seed i.
        ``previews`` decodes the codes after every scale (coarse-to-fine);
        ``callback`` sees every :class:`~bitwise_ar.sampling.ScaleStep`. ``prefix_bits`` fixes the bits of the first
        scales (e.g. ``output.bits[:3]`` of an earlier call, or a tokenizer's encoding of an image) instead of sampling
        them: variations that keep the coarse layout.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("no prompt given")
        layout = self.layout_for(aspect_ratio=aspect_ratio, resolution=resolution, image_size=image_size)
        sampling = sampling or self.defaults.sampling
        if generator is None:
            if isinstance(seed, Sequence):
                generator = [torch.Generator().manual_seed(int(s)) for s in seed]
            else:
                generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        check_generators(generator, len(prompts))
        # One generator per image promises each image as if generated alone: decode them one by one too.
        per_image = not isinstance(generator, torch.Generator)
        unknown = self.unknown_words(prompts)  # reported in the output (output.warnings), not logged
        text = self.text_encoder.encode(prompts)
        negative = None
        if negative_prompt is not None:
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negatives) != len(prompts):
                raise ValueError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
            negative = self.text_encoder.encode(negatives)
            if not sampling.uses_cfg:
                logger.warning("negative_prompt has no effect with cfg = 1")
        steps = iter_scales(
            self.transformer,
            text,
            layout,
            sampling,
            negative_text=negative,
            generator=generator,
            code_scale=self.tokenizer.config.code_scale,
            use_cache=use_cache,
            prefix_bits=prefix_bits,
        )
        return self._run_scales(steps, layout, previews=previews, callback=callback, progress=progress,
                                per_image=per_image, unknown=unknown)

    def _run_scales(
        self,
        steps: Any,
        layout: ScaleLayout,
        *,
        previews: bool,
        callback: Callable[[ScaleStep], None] | None,
        progress: bool,
        per_image: bool,
        unknown: list[list[str]],
    ) -> PipelineOutput:
        """Walk ``steps`` (from :func:`iter_scales`), with callbacks and previews, and decode the final codes."""
        bits, preview_images, summed = [], [] if previews else None, None
        for step in tqdm(steps, total=layout.num_scales, disable=not progress, desc="scales"):
            bits.append(step.bits)
            summed = step.summed_codes
            if callback is not None:
                callback(step)
            if preview_images is not None:
                preview_images.append(to_pil(self.decode(summed, per_image=per_image)))
        images = self.decode(summed, per_image=per_image)
        return PipelineOutput(
            images=to_pil(images), images_tensor=images, bits=bits, schedule=layout.schedule, previews=preview_images,
            unknown_words=unknown,
        )

    def unknown_words(self, prompts: Sequence[str]) -> list[list[str]]:
        """Per prompt, the words its text encoder does not know (none when the encoder cannot tell)."""
        find = getattr(self.text_encoder, "unknown_words", None)
        return find(list(prompts)) if find is not None else [[] for _ in prompts]

    # ------------------------------------------------------------------ editing
    @torch.inference_mode()
    def edit(
        self,
        image: Any,
        prompt: str,
        *,
        mask: Any = None,
        mode: EditMode = "inpaint",
        canvas_size: tuple[int, int] | None = None,
        offset: tuple[int, int] | None = None,
        keep_scales: int | None = None,
        mask_threshold: float = MASK_THRESHOLD,
        negative_prompt: str | None = None,
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        previews: bool = False,
        callback: Callable[[ScaleStep], None] | None = None,
        use_cache: bool = True,
        progress: bool = False,
    ) -> EditOutput:
        """Edit one image by partial-scale conditioning (:mod:`bitwise_ar.editing`): the tokenizer encodes the source
        to bits on this pipeline's schedule for its size; every scale is sampled as in generation (same seed, same
        draws, CFG, previews and callback), and each token outside the redraw region takes the source's bits before
        the codes are summed, so later scales see (and can correct) the seams.

        * ``mode="inpaint"``: ``mask`` (H, W), True / 1 / 255 = redraw, is reduced per scale by area with
          ``mask_threshold`` (a token is redrawn when at least that fraction of it is masked; default 0.1, measured
          in :mod:`bitwise_ar.editing`).
        * ``mode="outpaint"``: the image is placed at ``offset`` (top, left; default centred) on a larger
          ``canvas_size`` (H, W); the new area is redrawn (plus ``mask``, canvas-sized, if given).
        * ``mode="variation"``: the first ``keep_scales`` scales (default half of them) are kept whole, the rest
          redrawn; no mask.

        ``image``: a PIL image, an array or a ``(3, H, W)`` / ``(1, 3, H, W)`` tensor in [-1, 1]; its size (the
        canvas for out-painting) must be a multiple of the token stride.
        """
        if mode not in EDIT_MODES:
            raise ValueError(f"mode must be one of {list(EDIT_MODES)}, got {mode!r}")
        if not isinstance(prompt, str):
            raise ValueError("edit takes one prompt (a string) for one image")
        source = _source_image(image)
        if mode == "outpaint":
            if canvas_size is None:
                raise ValueError("out-painting needs canvas_size=(H, W), larger than the image")
            source, redraw = outpaint_canvas(source, canvas_size, offset)
            if mask is not None:
                redraw |= read_mask(mask, tuple(source.shape[-2:]))
        elif canvas_size is not None or offset is not None:
            raise ValueError(f"canvas_size and offset are for mode='outpaint', not {mode!r}")
        elif mode == "inpaint":
            if mask is None:
                raise ValueError("in-painting needs a mask (H, W): True / 1 / 255 where the image is redrawn")
            redraw = read_mask(mask, tuple(source.shape[-2:]))
        else:
            if mask is not None:
                raise ValueError("variations keep whole scales (keep_scales); use mode='inpaint' for a mask")
            redraw = torch.ones(source.shape[-2:], dtype=torch.bool)
        if keep_scales is not None and mode != "variation":
            raise ValueError(f"keep_scales is for mode='variation', not {mode!r}")
        height, width = source.shape[-2:]
        layout = self.layout_for(image_size=(height, width))
        if mode == "variation":
            count = layout.num_scales // 2 if keep_scales is None else int(keep_scales)
            if not 0 <= count <= layout.num_scales:
                raise ValueError(f"keep_scales must be in [0, {layout.num_scales}] (the schedule's scales), got {count}")
            keeps = [torch.full((1, h, w), k < count) for k, (h, w) in enumerate(layout.schedule)]
        else:
            keeps = [~m[None] for m in token_masks(redraw, layout.schedule, mask_threshold)]
        patchify = self.transformer.config.spatial_patchify
        latent = [(2 * h, 2 * w) for h, w in layout.schedule] if patchify else list(layout.schedule)
        source_bits = self.tokenizer.encode(source, schedule=latent).transformer_bits()
        generator = generator if generator is not None else torch.Generator().manual_seed(int(seed))
        check_generators(generator, 1)
        negative = None if negative_prompt is None else self.text_encoder.encode([negative_prompt])
        steps = iter_scales(
            self.transformer,
            self.text_encoder.encode([prompt]),
            layout,
            sampling or self.defaults.sampling,
            negative_text=negative,
            generator=generator,
            code_scale=self.tokenizer.config.code_scale,
            use_cache=use_cache,
            source_bits=source_bits,
            keep_masks=keeps,
        )
        out = self._run_scales(
            steps, layout, previews=previews, callback=callback, progress=progress, per_image=False,
            unknown=self.unknown_words([prompt]),
        )  # fmt: skip
        return EditOutput(
            **{f.name: getattr(out, f.name) for f in dataclasses.fields(PipelineOutput)},
            source=source,
            source_bits=source_bits,
            keep_masks=keeps,
            redraw_mask=redraw,
        )


def _source_image(image: Any) -> torch.Tensor:
    """One image as a float ``(1, 3, H, W)`` tensor in [-1, 1], with clear errors for empty or batched input."""
    if image is None:
        raise ValueError("no image given to edit")
    size = getattr(image, "size", None)
    if (isinstance(size, tuple) and 0 in size) or (hasattr(image, "shape") and 0 in tuple(image.shape)):
        raise ValueError("the image is empty (zero width or height)")
    batch = to_image_batch(image)
    if batch.shape[0] != 1:
        raise ValueError(f"edit takes one image, got a batch of {batch.shape[0]}")
    return batch
