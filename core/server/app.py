"""The HTTP face of the inspection service (FastAPI): parse, authenticate, call the service, serialise.

Every error is a JSON object ``{"error": {"code": ..., "message": ...}}`` with a 4xx status, and a
refused request changes nothing; a database that does not answer is ``503 database_unavailable``
(a station's key seen before still gets its phones answered with the line's fail-safe meanwhile).
Bodies over :data:`MAX_BODY_BYTES` are refused while they arrive, before they are read into memory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.imaging import image_format
from core.server.schemas import DecisionEvent, DecisionPage, ErrorBody, InspectionAnswer, InspectionRecord
from core.server.service import AccessDeniedError, InspectionService, SerialConflictError, UnknownLineError
from db.gate import Position

#: The largest request accepted: a camera frame is a few MB at most.
MAX_BODY_BYTES = 25 * 1024 * 1024
#: The longest a decisions long-poll waits for news.
MAX_WAIT_SECONDS = 60.0
SERIAL_MAX = 64


class ApiError(Exception):
    """A refused request: its status, a stable code and a message for people."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _posted_line(method: str, path: str) -> str | None:
    """The line of a phone's post (``POST /v1/lines/{line}/inspections``); None for any other request."""
    parts = path.strip("/").split("/")
    if method == "POST" and len(parts) == 4 and parts[:2] == ["v1", "lines"] and parts[3] == "inspections":
        return unquote(parts[2])
    return None


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413: at once by Content-Length, or as soon as a chunked body passes it."""

    def __init__(self, app: ASGIApp, limit: int, on_refused: Any) -> None:
        self.app, self.limit, self.on_refused = app, limit, on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request body is over the {self.limit // (1024 * 1024)} MB accepted"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            self.on_refused(scope)
            await _error(413, "body_too_large", message)(scope, receive, send)
            return
        seen = 0
        started = too_large = False

        async def counting_receive() -> Message:
            nonlocal seen, too_large
            incoming = await receive()
            if incoming["type"] == "http.request":
                seen += len(incoming.get("body", b""))
                if seen > self.limit:
                    too_large = True
                    raise _TooLarge()
            return incoming

        async def tracking_send(outgoing: Message) -> None:
            nonlocal started
            if too_large:
                return  # the app's own answer to a body cut short (the form parser's 400): the 413 below is sent instead
            started = started or outgoing["type"] == "http.response.start"
            await send(outgoing)

        with contextlib.suppress(_TooLarge):  # raised into the app by counting_receive; too_large says so
            await self.app(scope, counting_receive, tracking_send)
        if too_large:
            self.on_refused(scope)
            if not started:
                await _error(413, "body_too_large", message)(scope, receive, send)


class _TooLarge(Exception):
    pass


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def encode_cursor(position: Position | None) -> str:
    if position is None:
        return "start"
    at, kind, key = position
    return base64.urlsafe_b64encode(json.dumps([at.isoformat(), kind, key]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position | None:
    if cursor in ("", "start"):
        return None
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if len(parts) == 2:  # a cursor given before corrections were in the stream: a decision's
            parts = [parts[0], 0, parts[1]]
        at, kind, key = parts
        if kind not in (0, 1):
            raise ValueError(kind)
        return datetime.fromisoformat(at), int(kind), int(key)
    except (ValueError, TypeError):
        raise ApiError(400, "bad_cursor", f"cursor {cursor!r} is not one this service gave (use 'start', 'latest' or a returned cursor)") from None


def create_app(service: InspectionService) -> FastAPI:
    """The FastAPI application over ``service``."""
    # FastAPI's own /docs loads Swagger UI from a CDN, and an edge box has no internet: fastapi-offline
    # serves the same page with the files from the installed package (Swagger UI 5, which reads
    # OpenAPI 3.1). No /redoc: ReDoc still fetches its logo from a CDN.
    app = FastAPIOffline(
        redoc_url=None,
        title="Shadowline inspection service",
        version="1",
        description="The line posts one phone; the gate gets pass, reject or to_person within the line's budget.",
        responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody}},
    )
    metrics = service.metrics

    def too_large(scope: Scope) -> None:
        metrics.rejected.labels("body_too_large").inc()
        line = _posted_line(scope.get("method", ""), scope.get("path", ""))
        if line is not None:
            service.note_refused_post(line, "body_too_large")

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES, on_refused=too_large)

    def refused(request: Request, code: str) -> None:
        """Count a refused request; a refused phone (a POST of one) is also kept for the Live line (see the service)."""
        metrics.rejected.labels(code).inc()
        line = _posted_line(request.method, request.url.path)
        if line is not None:
            service.note_refused_post(line, code)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        refused(request, error.code)
        return _error(error.status, error.code, error.message)

    async def _database_down(_request: Request, _error: Exception) -> JSONResponse:
        metrics.rejected.labels("database_unavailable").inc()
        message = "the database is not answering (restarting?); try again in a moment: a phone posted again keeps its serial"
        return JSONResponse({"error": {"code": "database_unavailable", "message": message}}, status_code=503, headers={"Retry-After": "1"})

    for transient in (OperationalError, InterfaceError):  # db.engine.is_transient's kinds
        app.add_exception_handler(transient, _database_down)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        if request.url.path.startswith("/v1/"):
            # The form is checked before the handler runs: a caller without a valid key hears that first.
            try:
                await asyncio.to_thread(authorize, request.headers.get("authorization"), request.path_params.get("line"))
            except ApiError as denied:
                refused(request, denied.code)
                return _error(denied.status, denied.code, denied.message)
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}" for e in error.errors())
        code = "no_image" if any(e["loc"][-1:] == ("image",) for e in error.errors()) else "bad_request"
        refused(request, code)
        return _error(400, code, problems or "the request is not a multipart form with 'image' and 'serial'")

    def authorize(authorization: str | None, line: str | None) -> Any:
        if authorization and _bearer(authorization) is None:
            raise ApiError(401, "unauthorized", "the Authorization header must read 'Bearer KEY': the word Bearer, a space, then the key")
        try:
            return service.authorize(_bearer(authorization), line)
        except AccessDeniedError as error:
            raise ApiError(error.status, "unauthorized" if error.status == 401 else "forbidden", str(error)) from None
        except UnknownLineError as error:
            raise ApiError(404, "unknown_line", str(error)) from None

    @app.post(
        "/v1/lines/{line}/inspections",
        response_model=InspectionAnswer,
        responses={400: {"model": ErrorBody}, 409: {"model": ErrorBody}, 413: {"model": ErrorBody}, 415: {"model": ErrorBody}},
    )
    async def post_inspection(
        line: str,
        image: Annotated[UploadFile, File(description="the phone's photograph (JPEG, PNG, BMP, TIFF or WebP)")],
        serial: Annotated[str, Form(description="the phone's serial; a second post of it on the line is a retry")],
        captured_at: Annotated[datetime | None, Form(description="when the camera took the photograph (ISO 8601)")] = None,
        station: Annotated[str | None, Form(description="the camera station's name (default: the name of the station's API key)")] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> InspectionAnswer:
        """Inspect one phone and tell the gate what to do with it."""
        key, line_config = await asyncio.to_thread(authorize, authorization, line)
        serial = serial.strip()
        if not serial or len(serial) > SERIAL_MAX or not serial.isprintable():
            raise ApiError(400, "bad_serial", f"serial must be 1-{SERIAL_MAX} printable characters")
        data = await image.read()
        if not data:
            raise ApiError(400, "no_image", "the 'image' part is empty")
        kind = image_format(data)
        if kind is None:
            raise ApiError(415, "not_an_image", f"'image' ({image.filename or 'unnamed'}, {len(data):,} bytes) is not a JPEG, PNG, BMP, TIFF or WebP image")
        if captured_at is not None and captured_at.tzinfo is None:
            captured_at = captured_at.replace(tzinfo=UTC)
        try:
            answer = await service.post(
                line=line_config,
                key=key,
                serial=serial,
                image=data,
                suffix=f".{'jpg' if kind == 'jpeg' else kind}",
                captured_at=captured_at,
                station=station or key.name,
            )
        except SerialConflictError as error:
            raise ApiError(409, "serial_conflict", str(error)) from None
        return InspectionAnswer.from_answer(answer)

    @app.get("/v1/inspections/{inspection_id}", response_model=InspectionRecord)
    async def get_inspection(inspection_id: int, authorization: Annotated[str | None, Header()] = None) -> InspectionRecord:
        """A posted phone: what the gate was told, and its final decision once there is one."""
        key, _ = await asyncio.to_thread(authorize, authorization, None)
        stored = await asyncio.to_thread(service.stored_answer, inspection_id)
        if stored is None or stored.line_id != key.line_id:
            raise ApiError(404, "unknown_inspection", f"no inspection {inspection_id} posted on line {key.line}")
        return InspectionRecord.from_stored(stored)

    @app.get("/v1/lines/{line}/inspections", response_model=InspectionRecord)
    async def find_inspection(
        line: str, serial: Annotated[str, Query(description="the phone's serial")], authorization: Annotated[str | None, Header()] = None
    ) -> InspectionRecord:
        """A posted phone by its serial."""
        _, line_config = await asyncio.to_thread(authorize, authorization, line)
        stored = await asyncio.to_thread(service.find_by_serial, line_config.id, serial.strip())  # as a post stores it
        if stored is None:
            raise ApiError(404, "unknown_inspection", f"no phone {serial!r} posted on line {line}")
        return InspectionRecord.from_stored(stored)

    @app.get("/v1/lines/{line}/decisions", response_model=DecisionPage)
    async def follow_decisions(
        line: str,
        after: Annotated[str, Query(description="'start', 'latest', or the cursor of the previous page")] = "latest",
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS, description="seconds to wait for a decision when there is none yet (long-poll)")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        authorization: Annotated[str | None, Header()] = None,
    ) -> DecisionPage:
        """The line's final decisions after a cursor, oldest first; a hold station releases or scraps phones by them."""
        _, line_config = await asyncio.to_thread(authorize, authorization, line)
        position = await asyncio.to_thread(service.latest_cursor, line_config.id) if after == "latest" else decode_cursor(after)
        deadline = time.monotonic() + wait
        while True:
            events = await asyncio.to_thread(service.decisions_after, line_config.id, position, limit)
            if events or time.monotonic() >= deadline or service.is_stopping():
                break
            await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        if events:
            position = events[-1].position
        return DecisionPage(decisions=[DecisionEvent.from_event(e) for e in events], cursor=encode_cursor(position))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "not ready: a model is loading or failed, or the database is unreachable"}})
    async def readyz() -> JSONResponse:
        """Readiness: every line's models loaded and the database reachable."""
        ready, checks = await asyncio.to_thread(service.readiness)
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        body = await asyncio.to_thread(metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app
