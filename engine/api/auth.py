"""Bearer-token check for every HTTP and WebSocket request of an app.

An ASGI middleware rather than a FastAPI dependency, so that it also covers
routes outside the router. The token is read from ``Authorization: Bearer
...`` or, because a browser's ``EventSource`` and ``WebSocket`` cannot set
headers, from a ``token`` query parameter. Paths listed as public (the
dashboard's static files, which hold no data) pass without it.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterable
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from engine.api.errors import error_body

__all__ = ["BearerTokenMiddleware"]

logger = logging.getLogger(__name__)

_MESSAGE = (
    "This server requires an API token: send 'Authorization: Bearer <token>' "
    "or add '?token=<token>' to the URL."
)
_WRONG = "The API token is not valid; check the token the server was given."


class BearerTokenMiddleware:
    """Answer 401 to any request without the right bearer token.

    Args:
        app: The application to protect.
        token: The token every request must carry.
        public_paths: Paths served without a token to GET and HEAD.
    """

    def __init__(
        self, app: ASGIApp, token: str, public_paths: Iterable[str] = ()
    ) -> None:
        if not token:
            raise ValueError("The API token must be a non-empty string.")
        self.app = app
        self._token = token.encode("utf-8")
        self._public = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._is_public(scope):
            await self.app(scope, receive, send)
            return
        given = _token_of(scope)
        if given is not None and hmac.compare_digest(given, self._token):
            await self.app(scope, receive, send)
            return
        message = _MESSAGE if given is None else _WRONG
        logger.warning(
            "Request refused without a valid token",
            extra={"action": "api_unauthorized", "path": scope.get("path")},
        )
        if scope["type"] == "http":
            await _refuse_http(send, message)
        else:
            await _refuse_websocket(scope, receive, send, message)

    def _is_public(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            return False
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        return path in self._public


def _token_of(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                return credentials.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[-1].encode("utf-8") if values else None


def _body(message: str) -> bytes:
    return json.dumps({"detail": error_body(message, "unauthorized")}).encode()


async def _refuse_http(send: Send, message: str) -> None:
    body = _body(message)
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="taskengine"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _refuse_websocket(
    scope: Scope, receive: Receive, send: Send, message: str
) -> None:
    await receive()  # the websocket.connect message
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = _body(message)
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
