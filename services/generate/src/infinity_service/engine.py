"""The generation engine: a bounded queue of images, batched by schedule, run on one worker thread.

Every request is split into images ("items": prompt x copy, each with its own seed). The worker takes the oldest
waiting item and every other waiting item with the same *batch key* (aspect-ratio template, resolution, sampling
settings, with/without negative prompt) up to ``max_batch_size``, and generates them in one pipeline call. Results
and per-scale previews are handed back to the asyncio side with ``call_soon_threadsafe``.

Batching different requests keeps each image equal to the pipeline called alone with its seed only if the pipeline
draws each image's randomness from its own generator; ``per_sample_generators`` says so (given by the caller, or the
pipeline's own ``per_sample_generators`` attribute), and otherwise the engine generates each image alone
(``reproducible=True``, the default) or batches with one shared generator (``reproducible=False``: more throughput,
images then depend on their batch companions).

A batch that fails is generated again one image at a time, so a failure fails only the request whose image caused it;
the other requests of the batch still get their images.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import io
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bsq_tokenizer.schedules import nearest_template

from .config import ServiceConfig
from .schema import EditRequest, ImageRequest

__all__ = ["GenerationEngine", "Job", "QueueFull", "png_base64", "png_bytes"]

logger = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The bounded queue cannot take the request; answer 503 with Retry-After."""


def png_bytes(image: Any) -> bytes:
    """PNG encoding of a PIL image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64(image: Any) -> str:
    """Base64 (ASCII) of the PNG encoding of a PIL image."""
    return base64.b64encode(png_bytes(image)).decode("ascii")


@dataclass(eq=False)
class Job:
    """One request in flight: its images are collected here; streaming jobs also get events."""

    request: ImageRequest | EditRequest
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[dict[str, Any]]]
    events: asyncio.Queue[dict[str, Any]] | None
    remaining: int
    created: float = field(default_factory=time.perf_counter)
    started: float | None = None
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    failed: bool = False  # set by the worker when one of its images failed (its other images are then skipped)

    def emit(self, event: dict[str, Any]) -> None:
        """Send an event to the streaming client (thread-safe; no-op for plain requests)."""
        if self.events is not None:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


@dataclass(eq=False)
class _Item:
    job: Job
    index: int
    prompt: str
    seed: int
    key: tuple[Any, ...]


class GenerationEngine:
    """Queue + batching worker around an ``InfinityPipeline``-like object."""

    def __init__(
        self, pipeline: Any, config: ServiceConfig, *, model_name: str = "model", per_sample_generators: bool | None = None
    ) -> None:
        """``per_sample_generators``: whether ``pipeline(prompts, generator=[g_0, g_1, ...])`` makes image i equal to
        prompt i generated alone with g_i; ``None`` reads the pipeline's ``per_sample_generators`` attribute (False
        when it has none)."""
        self.pipeline = pipeline
        self.config = config
        self.model_name = model_name
        if per_sample_generators is None:
            per_sample_generators = bool(getattr(pipeline, "per_sample_generators", False))
        self.per_sample_generators = per_sample_generators
        self._waiting: collections.deque[_Item] = collections.deque()
        self._running = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.gallery: collections.deque[dict[str, Any]] = collections.deque(maxlen=max(config.gallery_size, 1))
        self.stats = {"batches": 0, "images": 0, "rejected": 0, "failed": 0, "max_batch": 0}
        if not self.per_sample_generators and config.reproducible:
            logger.warning(
                "the pipeline takes one generator per call, so every image is generated alone to stay reproducible "
                "(reproducible=true); set reproducible=false to batch with a shared generator"
            )

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> GenerationEngine:
        """Start the worker thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="infinity-generate", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the worker after the current batch; waiting requests fail with a 503."""
        with self._cond:
            self._stop = True
            waiting = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for item in waiting:
            self._fail(item.job, QueueFull("service is shutting down"))
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    @property
    def depth(self) -> int:
        """Images waiting or running."""
        with self._cond:
            return len(self._waiting) + self._running

    # ------------------------------------------------------------------ submission (event-loop side)
    def submit(self, request: ImageRequest | EditRequest, *, stream: bool = False) -> Job:
        """Queue the images of ``request``; raise :class:`QueueFull` when the bounded queue has no room. An edit is
        one image, never batched with others (it has its own source image and mask)."""
        loop = asyncio.get_running_loop()
        job = Job(
            request=request, loop=loop, future=loop.create_future(), events=asyncio.Queue() if stream else None,
            remaining=request.num_images,
        )  # fmt: skip
        if isinstance(request, EditRequest):
            items = [_Item(job, 0, request.prompt, request.seed, ("edit", id(job)))]
        else:
            template = nearest_template(request.h_div_w)
            sampling_key = (template, request.resolution, request.cfg, request.tau, request.top_k, request.top_p)
            cross_request = self.per_sample_generators or not self.config.reproducible
            negative = request.negative_prompt is not None
            # Without per-image generators, reproducible mode generates each image alone (a unique key per image).
            items = [
                _Item(job, index, prompt, seed, (*sampling_key, negative, None if cross_request else (id(job), index)))
                for index, prompt, seed in request.items()
            ]
        with self._cond:
            if self._stop:
                raise QueueFull("service is shutting down")
            if len(self._waiting) + self._running + len(items) > self.config.max_queue:
                self.stats["rejected"] += 1
                raise QueueFull(
                    f"queue full ({len(self._waiting) + self._running} images waiting or running, limit "
                    f"{self.config.max_queue}); retry after {self.config.retry_after_s} s"
                )
            self._waiting.extend(items)
            position = len(self._waiting)
            self._cond.notify()
        job.emit({"event": "queued", "images": len(items), "position": position})
        return job

    # ------------------------------------------------------------------ worker
    def _take_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._waiting and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            first = self._waiting[0]
            deadline = time.monotonic() + self.config.batch_wait_ms / 1000
            while True:
                same = [item for item in self._waiting if item.key == first.key]
                remaining = deadline - time.monotonic()
                if len(same) >= self.config.max_batch_size or remaining <= 0 or self._stop:
                    break
                self._cond.wait(remaining)
            batch = same[: self.config.max_batch_size]
            for item in batch:
                self._waiting.remove(item)
            self._running = len(batch)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._generate(batch)
            finally:
                with self._cond:
                    self._running = 0

    def _generate(self, batch: list[_Item]) -> None:
        """Run a batch; if it fails, run its undelivered images one by one, so that only the requests whose own image
        fails get an error (a failed batch must not take the service, or other users' requests, down)."""
        delivered: set[int] = set()
        try:
            self._run_batch(batch, delivered)
            return
        except Exception as err:
            if len(batch) == 1:
                self._fail_item(batch[0], err)
                return
            logger.warning("a batch of %d failed (%s: %s); generating its images one at a time", len(batch),
                           type(err).__name__, err)  # fmt: skip
        for item in batch:
            if id(item) in delivered or item.job.failed:
                continue
            try:
                self._run_batch([item], delivered)
            except Exception as err:
                self._fail_item(item, err)

    def _fail_item(self, item: _Item, err: Exception) -> None:
        logger.error("generating image %d of a request failed: %s: %s", item.index, type(err).__name__, err,
                     exc_info=err)  # fmt: skip
        self.stats["failed"] += 1
        self._fail(item.job, err)

    def _run_batch(self, batch: list[_Item], delivered: set[int]) -> None:
        """Generate ``batch`` in one pipeline call and deliver its images; ``delivered`` collects ``id(item)`` of
        every item handed back, so a retry after a failure skips them."""
        import torch
        from bitwise_ar.pipeline import to_pil, unknown_words_message
        from bitwise_ar.sampling import SamplingConfig

        request = batch[0].job.request
        now = time.perf_counter()
        for job in {item.job for item in batch}:
            if job.started is None:
                job.started = now
                job.emit({"event": "started", "batch_size": len(batch)})
        if isinstance(request, EditRequest):
            self._run_edit(batch[0], delivered)
            return
        template, resolution, cfg, tau, top_k, top_p = batch[0].key[:6]
        streaming = [i for i, item in enumerate(batch) if item.job.events is not None]
        num_scales = [0]

        def on_scale(step: Any) -> None:
            if not streaming:
                return
            codes = step.summed_codes[streaming]
            # With per-image generators the final images are decoded one by one; so are the previews.
            decoded = (
                self.pipeline.decode(codes, per_image=True)
                if self.per_sample_generators
                else self.pipeline.decode(codes)
            )
            images = to_pil(decoded)
            for image, i in zip(images, streaming, strict=True):
                item = batch[i]
                item.job.emit({
                    "event": "preview", "index": item.index, "scale": step.index + 1, "num_scales": num_scales[0],
                    "grid": list(step.size), "png_base64": png_base64(image),
                })  # fmt: skip

        prompts = [item.prompt for item in batch]
        negatives = [item.job.request.negative_prompt for item in batch]
        # "native": the model's own image size; otherwise a named resolution and aspect-ratio template.
        shape: dict[str, Any] = (
            {"image_size": request.image_size}
            if request.image_size is not None
            else {"aspect_ratio": template, "resolution": resolution}
        )
        # stored per-scale defaults (tuples) are fitted to this schedule: cut, or the last value repeated
        scales = len(self.pipeline.layout_for(**shape).schedule)

        def fit(value: Any) -> Any:
            return value if not isinstance(value, tuple) else value[:scales] + value[-1:] * (scales - len(value))

        kwargs: dict[str, Any] = {
            "negative_prompt": negatives if negatives[0] is not None else None,
            **shape,
            "sampling": SamplingConfig(cfg=fit(cfg), tau=fit(tau), top_k=top_k, top_p=top_p),
            "callback": on_scale,
        }
        if len(batch) > 1 and self.per_sample_generators:
            kwargs["generator"] = [torch.Generator().manual_seed(item.seed) for item in batch]
        else:
            kwargs["seed"] = batch[0].seed  # one image, or reproducible=false: one generator for the batch
        num_scales[0] = self.pipeline.layout_for(**shape).num_scales
        started = time.perf_counter()
        output = self.pipeline(prompts, **kwargs)
        elapsed = time.perf_counter() - started
        self.stats["batches"] += 1
        self.stats["images"] += len(batch)
        self.stats["max_batch"] = max(self.stats["max_batch"], len(batch))
        logger.info("batch of %d (%s, %s) in %.3f s", len(batch), request.aspect_ratio, resolution, elapsed)
        for item, image, unknown in zip(batch, output.images, output.unknown_words, strict=True):
            warnings = [unknown_words_message(unknown)] if unknown else []
            self._hand_back(item, image, len(batch), delivered, warnings)

    def _hand_back(self, item: _Item, image: Any, batch_size: int, delivered: set[int], warnings: list[str]) -> None:
        result = {
            "index": item.index, "prompt": item.prompt, "seed": item.seed, "width": image.width,
            "height": image.height, "png_base64": png_base64(image), "batch_size": batch_size, "warnings": warnings,
        }  # fmt: skip
        self._add_to_gallery(item, image)
        item.job.emit({"event": "image", **result})
        self._deliver(item.job, result)
        delivered.add(id(item))

    def _run_edit(self, item: _Item, delivered: set[int]) -> None:
        """One edit (``InfinityPipeline.edit``), streaming a preview per scale like generation."""
        from bitwise_ar.pipeline import to_pil
        from bitwise_ar.sampling import SamplingConfig

        request = item.job.request
        assert isinstance(request, EditRequest)
        scales = len(self.pipeline.layout_for(image_size=request.image_size).schedule)

        def fit(value: Any) -> Any:  # stored per-scale defaults fitted to this schedule, as for images
            return value if not isinstance(value, tuple) else value[:scales] + value[-1:] * (scales - len(value))

        def on_scale(step: Any) -> None:
            if item.job.events is None:
                return
            item.job.emit({
                "event": "preview", "index": 0, "scale": step.index + 1, "num_scales": scales,
                "grid": list(step.size), "png_base64": png_base64(to_pil(self.pipeline.decode(step.summed_codes))[0]),
            })  # fmt: skip

        options: dict[str, Any] = {"mask": request.mask, "mode": request.mode}
        if request.mode == "outpaint":
            options.update(canvas_size=request.canvas_size, offset=request.offset)
        if request.mode == "variation":
            options["keep_scales"] = request.keep_scales
        started = time.perf_counter()
        output = self.pipeline.edit(
            request.image, request.prompt, negative_prompt=request.negative_prompt, seed=request.seed,
            sampling=SamplingConfig(cfg=fit(request.cfg), tau=fit(request.tau), top_k=request.top_k,
                                    top_p=request.top_p),
            callback=on_scale, **options,
        )  # fmt: skip
        self.stats["batches"] += 1
        self.stats["images"] += 1
        logger.info("edit (%s, %s) in %.3f s", request.mode, request.aspect_ratio, time.perf_counter() - started)
        self._hand_back(item, output.images[0], 1, delivered, output.warnings)

    def _add_to_gallery(self, item: _Item, image: Any) -> None:
        if self.config.gallery_size <= 0:
            return
        thumb = image.copy()
        thumb.thumbnail((192, 192))
        self.gallery.appendleft({
            "prompt": item.prompt, "seed": item.seed, "aspect_ratio": item.job.request.aspect_ratio,
            "png_base64": png_base64(thumb), "created": time.time(),
        })  # fmt: skip

    def _deliver(self, job: Job, result: dict[str, Any]) -> None:
        job.results[result["index"]] = result
        job.remaining -= 1
        if job.remaining == 0:
            ordered = [job.results[i] for i in sorted(job.results)]

            def finish() -> None:
                if not job.future.done():
                    job.future.set_result(ordered)

            job.loop.call_soon_threadsafe(finish)

    def _fail(self, job: Job, err: BaseException) -> None:
        if job.failed:
            return
        job.failed = True

        def fail() -> None:
            if not job.future.done():
                job.future.set_exception(err)

        job.emit({"event": "error", "status": 503 if isinstance(err, QueueFull) else 500, "message": str(err)})
        job.loop.call_soon_threadsafe(fail)
