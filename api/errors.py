"""Every error leaves the API as ``{"error": message}`` with the right status; never a stack trace.

``STATUS`` is the one table from the core's error kinds (``search.errors``) to HTTP statuses. Routes
under ``/v1/`` (the OpenAI-compatible ones) answer OpenAI's error shape instead, ``{"error": {"message",
"type", "param", "code"}}``, which the ``openai`` client reads; every other route keeps ``{"error": str}``.
"""

from __future__ import annotations

import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from search.errors import (
    BadInput,
    Cancelled,
    Conflict,
    NotFound,
    NotReady,
    Overloaded,
    TooLarge,
    VitrineError,
)

log = logging.getLogger(__name__)


class Unauthorized(VitrineError):
    """No token, or not one of VITRINE_API_TOKENS."""


class RequestTimeout(VitrineError):
    """The request body did not arrive within VITRINE_REQUEST_BODY_TIMEOUT."""


STATUS: dict[type[VitrineError], int] = {
    BadInput: 400,
    Unauthorized: 401,
    NotFound: 404,
    RequestTimeout: 408,
    Conflict: 409,
    TooLarge: 413,
    Overloaded: 429,
    Cancelled: 499,  # nginx's "client closed request": nobody reads it, the log does
    NotReady: 503,
}
# OpenAI's error "type" for a status (what its API sends; the openai client maps statuses to classes).
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    499: "cancelled_error",
    500: "server_error",
    503: "service_unavailable_error",
}
OPENAI_PREFIX = "/v1/"


def status_of(exc: VitrineError) -> int:
    """The HTTP status of a core error: its kind's entry in ``STATUS`` (the nearest base class's)."""
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 400


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, *, path: str = ""
) -> JSONResponse:
    if path.startswith(OPENAI_PREFIX):
        error = {
            "message": message,
            "type": _OPENAI_TYPES.get(status, "api_error"),
            "param": None,
            "code": None,
        }
        return JSONResponse({"error": error}, status_code=status, headers=headers)
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def headers_for(status: int) -> dict[str, str] | None:
    if status == 401:
        return {"WWW-Authenticate": "Bearer"}
    if status == 429:
        return {"Retry-After": "1"}
    return None


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(item) for item in error.get("loc", ()) if item != "body")
        parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


LOG_LINE_CHARS = 2000


def bounded_traceback(exc: BaseException) -> str:
    """The traceback with each line cut at LOG_LINE_CHARS: a database error's message carries its whole
    statement (a 2.9 KB request once logged 390 KB of SQL), the log needs the start of it."""
    lines = "".join(traceback.format_exception(exc)).splitlines()
    return "\n".join(
        line if len(line) <= LOG_LINE_CHARS else f"{line[:LOG_LINE_CHARS]}... ({len(line)} characters)"
        for line in lines
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VitrineError)
    async def _vitrine(request: Request, exc: VitrineError) -> JSONResponse:
        status = status_of(exc)
        return error_response(status, exc.message, headers_for(status), path=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # The contract does not use 422: FastAPI's validation errors are bad input.
        return error_response(400, _validation_message(exc), path=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            exc.status_code, str(exc.detail), getattr(exc, "headers", None), path=request.url.path
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s\n%s", request.method, request.url.path, bounded_traceback(exc))
        return error_response(
            500, "internal server error; the server log has the details", path=request.url.path
        )
