"""The error body of the HTTP API and the one place engine errors map to it.

Every error answer is ``{"detail": {"message": ..., "error_type": ...}}``:
a full sentence a person can act on and a stable snake_case code. Router
code raises :func:`api_error`; :func:`install_error_handlers` gives the
app-level errors (validation, unknown routes, crashes) the same shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.exceptions import (
    CacheError,
    DuplicateTaskIdError,
    StateError,
    StoreError,
    TaskEngineError,
    TaskNotFoundError,
    UnknownTaskTypeError,
    UsageError,
    WorkerNotStartedError,
)

__all__ = [
    "api_error",
    "error_body",
    "http_error_for",
    "install_error_handlers",
]

logger = logging.getLogger(__name__)

_UNAVAILABLE = (
    "The event store could not complete the request; try again shortly, and "
    "check the server's log if it keeps failing."
)
_CACHE_FAILED = "The result cache could not complete the request; try again."
_INTERNAL = "The server failed to handle the request; the details are in its log."
_REASONS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "invalid_request",
}


def error_body(message: str, error_type: str, **extra: Any) -> dict[str, Any]:
    """The ``detail`` dict of an error answer."""
    return {"message": message, "error_type": error_type, **extra}


def api_error(
    status_code: int, message: str, error_type: str, **extra: Any
) -> HTTPException:
    """An :class:`HTTPException` whose detail already has the API's shape."""
    return HTTPException(status_code, detail=error_body(message, error_type, **extra))


def _status_of(exc: TaskEngineError) -> int:
    if isinstance(exc, UnknownTaskTypeError):
        return 400
    if isinstance(exc, WorkerNotStartedError):
        return 503
    if isinstance(exc, DuplicateTaskIdError):
        return 409
    if isinstance(exc, UsageError):
        return 422
    if isinstance(exc, TaskNotFoundError):
        return 404
    if isinstance(exc, StateError):
        return 409
    if isinstance(exc, StoreError | CacheError):
        return 503
    return 500


def http_error_for(exc: TaskEngineError) -> HTTPException:
    """Map an engine error to its HTTP status and body.

    Usage and state errors keep their own sentence, which names the
    offending value. Store and cache errors may carry a driver's words, so
    they answer a fixed sentence and the cause goes to the log.
    """
    status_code = _status_of(exc)
    message = exc.message
    if isinstance(exc, StoreError):
        message = _UNAVAILABLE
    elif isinstance(exc, CacheError):
        message = _CACHE_FAILED
    elif status_code == 500:
        message = _INTERNAL
    if status_code >= 500 or isinstance(exc, StoreError | CacheError):
        logger.error(
            "Request failed in the engine",
            extra={"action": "api_engine_error", "error_type": exc.error_type},
            exc_info=exc,
        )
    return api_error(status_code, message, exc.error_type)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(part) for part in loc if part != "body"] or ["body"]
    return ".".join(parts)


def _validation_message(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return "The request is not valid."
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "it cannot be parsed")
        return f"The request body is not valid JSON: {reason}."
    where = _location(first.get("loc", ()))
    reason = str(first.get("msg", "is not valid")).rstrip(".")
    more = len(errors) - 1
    tail = f" ({more} more problem{'s' if more > 1 else ''} listed in 'errors')"
    return f"The request's {where!r} is not valid: {reason}{tail if more else ''}."


def _plain_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        for e in errors
    ]


async def _on_validation_error(
    request: Request, exc: RequestValidationError
) -> JSONResponse:
    errors = list(exc.errors())
    body = error_body(
        _validation_message(errors), "invalid_request", errors=_plain_errors(errors)
    )
    return JSONResponse({"detail": body}, status_code=422)


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail: Any = exc.detail
    if not (isinstance(detail, dict) and "message" in detail):
        text = str(detail).rstrip(".") if detail else "The request failed"
        detail = error_body(
            f"{text}: {request.method} {request.url.path}.",
            _REASONS.get(exc.status_code, "http_error"),
        )
    return JSONResponse(
        {"detail": detail}, status_code=exc.status_code, headers=exc.headers
    )


async def _on_engine_error(request: Request, exc: TaskEngineError) -> JSONResponse:
    http_exc = http_error_for(exc)
    return JSONResponse({"detail": http_exc.detail}, status_code=http_exc.status_code)


async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
    logger.error(
        "Request crashed",
        extra={"action": "api_request_crashed", "path": request.url.path},
        exc_info=exc,
    )
    return JSONResponse(
        {"detail": error_body(_INTERNAL, "internal_error")}, status_code=500
    )


def install_error_handlers(app: FastAPI) -> None:
    """Give every error answer of ``app`` the API's body.

    A router cannot install app-level handlers, so an app that includes
    :func:`create_task_worker_router` calls this once. Without it the
    router's own errors already have the shape; validation errors and
    unknown routes keep FastAPI's defaults.
    """
    handlers: dict[type[Exception], Any] = {
        RequestValidationError: _on_validation_error,
        StarletteHTTPException: _on_http_error,
        TaskEngineError: _on_engine_error,
        Exception: _on_crash,
    }
    for exc_class, handler in handlers.items():
        app.add_exception_handler(exc_class, handler)
