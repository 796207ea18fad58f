"""``WS /ws/tasks/{group_id}``: the stream of ``GET /events`` over a WebSocket.

Each message is one JSON event, as the ``data:`` of an SSE event; the first
one is ``{"type": "subscribed", ...}``. A ``last_event_id`` query parameter
resumes from the log as ``Last-Event-ID`` does for SSE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine.api.errors import error_body
from engine.api.sse import encode_message
from engine.api.stream import READY, task_event_stream

__all__ = ["deny_websocket", "serve_websocket"]

logger = logging.getLogger(__name__)

POLICY_VIOLATION = 1008


async def deny_websocket(
    websocket: WebSocket, status_code: int, message: str, error_type: str
) -> None:
    """Refuse a handshake with an HTTP answer in the API's error shape.

    Servers without the ASGI denial-response extension get a close with
    code 1008 and the message as the reason instead.
    """
    extensions = websocket.scope.get("extensions") or {}
    if "websocket.http.response" in extensions:
        body = {"detail": error_body(message, error_type)}
        await websocket.send_denial_response(JSONResponse(body, status_code))
        return
    await websocket.close(POLICY_VIOLATION, reason=message[:120])


async def _pump(websocket: WebSocket, events: AsyncIterator[dict[str, Any]]) -> None:
    async for message in events:
        if message is READY:
            message = {**READY, "group_id": websocket.path_params.get("group_id")}
        await websocket.send_text(encode_message(message))


async def _until_disconnect(websocket: WebSocket) -> None:
    while True:
        received = await websocket.receive()
        if received["type"] == "websocket.disconnect":
            return


async def serve_websocket(
    websocket: WebSocket,
    worker: Any,
    *,
    group_id: str,
    task_id: str | None,
    after: int | None,
) -> None:
    """Accept, stream until either side stops, and release the subscription."""
    await websocket.accept()
    events = task_event_stream(worker, group_id=group_id, task_id=task_id, after=after)
    pump = asyncio.create_task(_pump(websocket, events))
    reader = asyncio.create_task(_until_disconnect(websocket))
    try:
        await asyncio.wait({pump, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, reader):
            task.cancel()
        results = await asyncio.gather(pump, reader, return_exceptions=True)
        await events.aclose()  # type: ignore[attr-defined]
    for result in results:
        if isinstance(result, Exception) and not isinstance(
            result, WebSocketDisconnect | OSError
        ):
            logger.error(
                "WebSocket stream failed",
                extra={"action": "websocket_failed", "group_id": group_id},
                exc_info=result,
            )
    if reader.done() and not reader.cancelled() and reader.exception() is None:
        return
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
        await websocket.close()
