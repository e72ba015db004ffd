"""The HTTP application (FastAPI): JSON API, server-sent-event previews, the web page, auth, limits, request logs.

``create_app(config)`` loads the pipeline at startup (lifespan); ``create_app(config, engine=...)`` serves an engine
built by the caller (tests, Ray Serve replicas). The same app runs under uvicorn and under Ray Serve.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bsq_tokenizer.schedules import TEMPLATES
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .config import NATIVE, ServiceConfig
from .engine import GenerationEngine, QueueFull
from .schema import (
    EditRequestBody,
    ErrorResponse,
    ImageRequestBody,
    ImagesResponse,
    RequestError,
    parse_edit_request,
    parse_image_request,
    parse_json_body,
)

__all__ = ["available_resolutions", "create_app", "load_engine", "request_defaults"]

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("infinity_service.access")
STATIC_DIR = Path(__file__).resolve().parent / "static"


def load_engine(config: ServiceConfig) -> GenerationEngine:
    """Load the configured pipeline (the packaged demo model by default) and start an engine on it."""
    import bitwise_ar
    from bitwise_ar.pipeline import InfinityPipeline

    model_dir = (
        Path(config.model_dir) if config.model_dir else Path(bitwise_ar.__file__).resolve().parent / "demo_model"
    )
    if not model_dir.is_dir():
        hint = (
            "set model_dir to a pipeline directory"
            if config.model_dir
            else "the packaged demo model is missing; set model_dir"
        )
        raise FileNotFoundError(
            f"model directory {model_dir} not found: {hint} (transformer/, tokenizer/, text_encoder/)"
        )
    started = time.perf_counter()
    pipeline = InfinityPipeline.from_pretrained(model_dir, device=config.device)
    logger.info("loaded %s in %.1f s", model_dir, time.perf_counter() - started)
    # InfinityPipeline takes one generator per prompt (image i == prompt i generated alone with generator i), which
    # lets the engine batch different requests without changing their images.
    return GenerationEngine(
        pipeline, config, model_name=config.model_name or model_dir.name, per_sample_generators=True
    ).start()


def request_defaults(engine: GenerationEngine) -> dict[str, Any]:
    """Values used for fields a request leaves out: the pipeline's stored defaults, clipped to the limits.

    ``native_size`` is the model's own (H, W) when its pipeline.json has one; the default resolution is then
    "native" (if the limits allow it), since a model trained at one size is at its best there.
    """
    defaults = getattr(engine.pipeline, "defaults", None)
    limits = engine.config.limits
    named = [r for r in limits.resolutions if r != NATIVE]
    out: dict[str, Any] = {"aspect_ratio": "1:1", "resolution": named[0] if named else NATIVE, "cfg": 3.0,
                           "tau": 1.0, "top_k": 900, "top_p": 0.97, "native_size": None}  # fmt: skip
    if defaults is not None:
        sampling = defaults.sampling
        for name in ("cfg", "tau"):  # one value, or one per scale (requests that leave them out get the same)
            value = getattr(sampling, name)
            out[name] = float(value) if isinstance(value, int | float) else [float(v) for v in value]
        out["top_k"], out["top_p"] = int(sampling.top_k), float(sampling.top_p)
        if defaults.resolution in named:
            out["resolution"] = defaults.resolution
        out["aspect_ratio"] = defaults.aspect_ratio
        if defaults.image_size is not None:
            out["native_size"] = [int(v) for v in defaults.image_size]
            if NATIVE in limits.resolutions:
                out["resolution"] = NATIVE
    return out


def available_resolutions(engine: GenerationEngine) -> list[str]:
    """The configured resolutions this model can serve ("native" only when it has a native size)."""
    native = request_defaults(engine)["native_size"] is not None
    return [r for r in engine.config.limits.resolutions if r != NATIVE or native]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # a message may quote client text; lone surrogates in it cannot be encoded as UTF-8, so escape them
    message = message.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status, headers=headers)


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "the body is not a JSON object"},
    401: {"model": ErrorResponse, "description": "missing or wrong API key (when keys are configured)"},
    413: {"model": ErrorResponse, "description": "over a limit: body size, nesting depth, number length, prompts, images"},
    422: {"model": ErrorResponse, "description": "a field is invalid; the message names it and the valid values"},
    503: {"model": ErrorResponse, "description": "the queue is full or the model is loading; retry after Retry-After"},
}
# The body is read by the service's own JSON reader (limits on size, depth and number length), so FastAPI does not
# parse it; its schema is declared here for the OpenAPI document.
_REQUEST_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": ImageRequestBody.model_json_schema(),
}}}}  # fmt: skip
_EDIT_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": EditRequestBody.model_json_schema(),
}}}}  # fmt: skip


async def _read_body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"request body is {declared} bytes; the limit is {limit}", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"request body exceeds the limit of {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def create_app(config: ServiceConfig, engine: GenerationEngine | None = None) -> FastAPI:
    """The FastAPI application; ``engine=None`` loads the model at startup and stops it at shutdown."""
    api_keys = config.resolved_api_keys()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = app.state.engine is None
        if owned:
            app.state.engine = await asyncio.get_running_loop().run_in_executor(None, load_engine, config)
        try:
            yield
        finally:
            if owned:
                app.state.engine.stop()

    app = FastAPI(title="Infinity generation service", version="0.1.0", lifespan=lifespan, docs_url="/docs")
    app.state.engine = engine

    def get_engine() -> GenerationEngine:
        if app.state.engine is None:
            raise RequestError("the model is still loading; retry shortly", status=503)
        return app.state.engine

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError) -> JSONResponse:
        headers = {"Retry-After": str(config.retry_after_s)} if err.status == 503 else None
        return _error(err.status, str(err), headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; see the service log")

    @app.middleware("http")
    async def _log_and_auth(request: Request, call_next: Any) -> Any:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        started = time.perf_counter()
        path = request.url.path
        if api_keys and path.startswith("/v1/"):
            header = request.headers.get("authorization", "")
            presented = (
                header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
            )
            # Compare against every key (no early exit) in constant time per key.
            ok = False
            for key in api_keys:
                ok |= hmac.compare_digest(presented.encode(), key.encode())
            if not ok:
                response = _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                                  {"WWW-Authenticate": "Bearer"})  # fmt: skip
                _log_access(request, response.status_code, started, request_id)
                response.headers["X-Request-ID"] = request_id
                return response
        response = await call_next(request)
        response.headers["X-Request-ID"] = request_id
        _log_access(request, response.status_code, started, request_id)
        return response

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        current = app.state.engine
        if current is None:
            return JSONResponse(
                {"status": "loading"}, status_code=503, headers={"Retry-After": str(config.retry_after_s)}
            )
        return JSONResponse({"status": "ok", "model": current.model_name, "queue_depth": current.depth,
                             "max_queue": config.max_queue, "stats": dict(current.stats)})  # fmt: skip

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        current = get_engine()
        return JSONResponse({"object": "list", "data": [{
            "id": current.model_name, "object": "model", "device": config.device,
            "defaults": request_defaults(current), "resolutions": available_resolutions(current),
            "aspect_ratio_templates_h_div_w": list(TEMPLATES), "max_batch_size": config.max_batch_size,
            "batches_across_requests": current.per_sample_generators or not config.reproducible,
            "limits": {"max_prompt_chars": config.limits.max_prompt_chars, "max_prompts": config.limits.max_prompts,
                       "max_count": config.limits.max_count, "cfg_range": list(config.limits.cfg_range),
                       "tau_range": list(config.limits.tau_range)},
        }]})  # fmt: skip

    @app.get("/v1/gallery")
    async def gallery() -> JSONResponse:
        return JSONResponse({"data": list(get_engine().gallery)})

    async def _parse(request: Request) -> Any:
        current = get_engine()
        decoded = parse_json_body(await _read_body(request, config.limits.max_body_bytes))
        return current, parse_image_request(
            decoded, config.limits, request_defaults(current), resolutions=available_resolutions(current)
        )

    def _submit(current: GenerationEngine, parsed: Any, stream: bool) -> Any:
        try:
            return current.submit(parsed, stream=stream)
        except QueueFull as err:
            raise RequestError(str(err), status=503) from None

    @app.post("/v1/images", openapi_extra=_REQUEST_BODY, summary="Generate images",
              responses={200: {"model": ImagesResponse, "content": {"image/png": {}},
                               "description": "the images (JSON), or the one image as PNG"}, **_ERRORS})  # fmt: skip
    async def images(request: Request) -> Response:
        current, parsed = await _parse(request)
        return await _answer(current, parsed)

    async def _answer(current: GenerationEngine, parsed: Any) -> Response:
        job = _submit(current, parsed, stream=False)
        results = await job.future
        total = time.perf_counter() - job.created
        queued = (job.started or job.created) - job.created
        if parsed.response_format == "png":
            return Response(
                base64.b64decode(results[0]["png_base64"]), media_type="image/png",
                headers={"X-Seed": str(results[0]["seed"]), "X-Model": current.model_name,
                         "X-Generation-Seconds": f"{total:.3f}"},
            )  # fmt: skip
        return JSONResponse({
            "model": current.model_name, "created": int(time.time()),
            "request": {"aspect_ratio": parsed.aspect_ratio, "resolution": parsed.resolution, "cfg": parsed.cfg,
                        "tau": parsed.tau, "top_k": parsed.top_k, "top_p": parsed.top_p, "seed": parsed.seed,
                        "count": parsed.count},
            "images": results, "timings": {"queued_s": round(queued, 4), "total_s": round(total, 4)},
            "warnings": list(dict.fromkeys(f"{r['prompt']!r}: {w}" for r in results for w in r["warnings"])),
        })  # fmt: skip

    @app.post("/v1/images/stream", openapi_extra=_REQUEST_BODY, summary="Generate images, streaming previews",
              responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events: queued, "
                               "started, preview (one per scale), image, error, done"}, **_ERRORS})  # fmt: skip
    async def images_stream(request: Request) -> StreamingResponse:
        current, parsed = await _parse(request)
        return _stream(current, parsed)

    def _stream(current: GenerationEngine, parsed: Any) -> StreamingResponse:
        job = _submit(current, parsed, stream=True)

        async def events() -> AsyncIterator[bytes]:
            assert job.events is not None
            images_left = parsed.num_images
            while images_left:
                event = await job.events.get()
                name = event.pop("event")
                yield _sse(name, event)
                if name == "image":
                    images_left -= 1
                elif name == "error":
                    return
            total = time.perf_counter() - job.created
            yield _sse("done", {"images": parsed.num_images, "total_s": round(total, 4), "model": current.model_name})

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip

    async def _parse_edit(request: Request) -> Any:
        current = get_engine()
        decoded = parse_json_body(await _read_body(request, config.limits.max_edit_body_bytes))
        parsed = parse_edit_request(decoded, config.limits, request_defaults(current))
        try:  # the size must fit the model's token grid; say so now rather than fail in the worker
            current.pipeline.layout_for(image_size=parsed.image_size)
        except ValueError as err:
            raise RequestError(f"the {'canvas' if parsed.canvas_size else 'image'} cannot be edited: {err}") from None
        return current, parsed

    @app.post("/v1/edits", openapi_extra=_EDIT_BODY, summary="Edit an image (in-paint, out-paint, variation)",
              responses={200: {"model": ImagesResponse, "content": {"image/png": {}},
                               "description": "the edited image (JSON), or as PNG"}, **_ERRORS})  # fmt: skip
    async def edits(request: Request) -> Response:
        current, parsed = await _parse_edit(request)
        return await _answer(current, parsed)

    @app.post("/v1/edits/stream", openapi_extra=_EDIT_BODY, summary="Edit an image, streaming previews",
              responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events as for "
                               "/v1/images/stream"}, **_ERRORS})  # fmt: skip
    async def edits_stream(request: Request) -> StreamingResponse:
        current, parsed = await _parse_edit(request)
        return _stream(current, parsed)

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/static/{name}")
    async def static(name: str) -> FileResponse:
        path = (STATIC_DIR / name).resolve()
        if path.parent != STATIC_DIR or not path.is_file():
            raise StarletteHTTPException(404, f"no static file {name!r}")
        return FileResponse(path)

    return app


def _log_access(request: Any, status: int, started: float, request_id: str) -> None:
    access_logger.info(json.dumps({
        "ts": round(time.time(), 3), "request_id": request_id, "method": request.method, "path": request.url.path,
        "status": status, "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "client": request.client.host if request.client else None,
        "bytes_in": int(request.headers.get("content-length") or 0),
    }, separators=(",", ":")))  # fmt: skip
