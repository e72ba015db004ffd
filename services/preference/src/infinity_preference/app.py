"""The HTTP application (FastAPI): the operator's API and page (admin token), the raters' API and page (per-rater
token in the link), JSON errors that say what to fix, and a request-body size limit."""

from __future__ import annotations

import hmac
import io
import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .config import PreferenceConfig
from .report import log_results
from .study import StudyError, StudyStore

__all__ = ["create_app", "pixels_png"]

logger = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
NO_STORE = {"Cache-Control": "no-store"}


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    path: str = Field(min_length=1, max_length=4096, description="an infinity-eval run folder (--out of the run)")
    label: str | None = Field(None, min_length=1, max_length=200, description="the model's name (operator only)")


class CreateStudyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=200)
    runs: list[RunSpec] = Field(min_length=2, max_length=16)
    benchmark: str | None = Field(None, max_length=200, description="needed when the runs hold several benchmarks")


class InviteBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    names: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1, max_length=200)


class VoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    assignment: str = Field(min_length=1, max_length=64)
    client_id: str = Field(min_length=8, max_length=64, description="random id made by the client; a retry reuses it")
    choices: dict[Annotated[str, Field(max_length=32)], Annotated[str, Field(max_length=8)]] = Field(max_length=8)


def pixels_png(path: Path) -> bytes:
    """The image's pixels as a PNG with no metadata chunks (RGB, or RGBA when it has transparency)."""
    try:
        with PILImage.open(path) as image:
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    except (OSError, ValueError) as err:
        raise _BrokenImage(
            f"the image cannot be read on the server ({type(err).__name__}); tell the study's operator"
        ) from None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _error(status: int, message: str) -> JSONResponse:
    message = message.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status, headers=NO_STORE)


class _BodyLimit:
    """Pure ASGI middleware: 413 for a body over ``limit`` bytes (declared or streamed)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await _error(413, f"request body is {int(declared)} bytes; the limit is {self.limit}")(
                scope, receive, send
            )
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _error(413, f"request body over the limit of {self.limit} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass


class _Unauthorized(StudyError):
    status = 401


class _Unavailable(StudyError):
    status = 503


class _BrokenImage(StudyError):
    status = 500


def create_app(config: PreferenceConfig, store: StudyStore, *, admin_token: str) -> Any:
    """The app over ``store``; ``admin_token`` guards every ``/api/admin`` route."""
    if len(admin_token) < 16:
        raise ValueError("the admin token must be at least 16 characters")
    app = FastAPI(
        title="infinity-preference",
        version="0.1.0",
        description="Double-blind human preference study of text-to-image models (Infinity paper §4).",
    )
    app.state.store = store

    def admin(authorization: Annotated[str | None, Header()] = None) -> None:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given.encode("utf-8", "replace"), admin_token.encode()):
            raise _Unauthorized("admin token missing or wrong (Authorization: Bearer <token>)")

    @app.exception_handler(StudyError)
    async def _study_error(_: Request, err: StudyError) -> JSONResponse:
        return _error(err.status, str(err))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/admin")

    @app.get("/admin", include_in_schema=False)
    def operator_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "operator.html", headers=NO_STORE)

    @app.get("/rate/{token}", include_in_schema=False)
    def rater_page(token: str) -> FileResponse:
        return FileResponse(STATIC_DIR / "rate.html", headers={**NO_STORE, "Referrer-Policy": "no-referrer"})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in {"operator.js", "rate.js", "style.css"}:
            return _error(404, "not found")
        return FileResponse(STATIC_DIR / name)

    # ------------------------------------------------------------------------------------------ operator API
    guard = [Depends(admin)]

    @app.post("/api/admin/studies", dependencies=guard, status_code=201)
    def create_study(body: CreateStudyBody) -> dict[str, Any]:
        try:
            return store.create_study(body.name, [(r.label, r.path) for r in body.runs], benchmark=body.benchmark)
        except (FileNotFoundError, ValueError) as err:
            raise StudyError(str(err)) from None

    @app.get("/api/admin/studies", dependencies=guard)
    def list_studies() -> list[dict[str, Any]]:
        return store.list_studies()

    @app.get("/api/admin/studies/{study_id}", dependencies=guard)
    def study(study_id: int) -> dict[str, Any]:
        return store.study_summary(study_id)

    @app.post("/api/admin/studies/{study_id}/raters", dependencies=guard, status_code=201)
    def invite(study_id: int, body: InviteBody) -> list[dict[str, Any]]:
        return store.invite(study_id, body.names)

    @app.get("/api/admin/studies/{study_id}/results", dependencies=guard)
    def results(study_id: int) -> dict[str, Any]:
        return store.results(study_id)

    @app.post("/api/admin/studies/{study_id}/mlflow", dependencies=guard)
    def to_mlflow(study_id: int) -> dict[str, Any]:
        try:
            run_id = log_results(store.results(study_id), config.tracking, config.data_dir)
        except ImportError as err:  # MLflow not installed on this server
            raise _Unavailable(str(err)) from None
        return {"run_id": run_id}

    # --------------------------------------------------------------------------------------------- rater API
    @app.get("/api/rater/{token}")
    def me(token: str) -> JSONResponse:
        return JSONResponse(store.rater_view(token), headers=NO_STORE)

    @app.get("/api/rater/{token}/next")
    def next_pair(token: str) -> JSONResponse:
        pair = store.next_pair(token)
        return JSONResponse(pair if pair is not None else {"done": True, **store.rater_view(token)}, headers=NO_STORE)

    @app.get("/api/rater/{token}/image/{image_key}")
    def image(token: str, image_key: str) -> Response:
        # pixels only, re-encoded as PNG: no file name, date or ETag (a file's mtime could tell one model's images
        # from another's) and none of the file's metadata (some generators write their name and settings into it)
        return Response(pixels_png(store.image_file(token, image_key)), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})  # fmt: skip

    @app.post("/api/rater/{token}/votes")
    def vote(token: str, body: VoteBody) -> JSONResponse:
        return JSONResponse(store.submit(token, body.assignment, body.client_id, body.choices), headers=NO_STORE)

    return _BodyLimit(app, config.max_body_bytes)
