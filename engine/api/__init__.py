"""The HTTP API: ``create_task_worker_router`` with SSE and WebSocket streams.

Needs the ``api`` extra (FastAPI, sse-starlette, uvicorn). See
``docs/http.md`` for the endpoints, status codes and error body.
"""

from __future__ import annotations

from engine.api.auth import BearerTokenMiddleware
from engine.api.errors import api_error, http_error_for, install_error_handlers
from engine.api.router import create_task_worker_router
from engine.api.stream import task_event_stream

__all__ = [
    "BearerTokenMiddleware",
    "api_error",
    "create_task_worker_router",
    "http_error_for",
    "install_error_handlers",
    "task_event_stream",
]
