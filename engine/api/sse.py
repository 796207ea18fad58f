"""``GET /events``: task events as Server-Sent Events via sse-starlette.

Each event's ``id:`` is its log position, so a browser's ``EventSource``
resumes by itself: it reconnects with ``Last-Event-ID`` and the stream
replays what it missed from the log (:mod:`engine.api.stream`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent

from engine.api.render import json_safe
from engine.api.stream import READY, task_event_stream

__all__ = ["RETRY_MS", "encode_message", "event_source_response"]

RETRY_MS = 2000
"""How long a browser waits before reconnecting, sent when a stream opens."""


def encode_message(message: dict[str, Any]) -> str:
    """One event as a line of JSON (never containing a raw newline)."""
    return json.dumps(json_safe(message), ensure_ascii=False, allow_nan=False)


async def _frames(
    events: AsyncIterator[dict[str, Any]],
) -> AsyncIterator[ServerSentEvent]:
    async with aclosing(events):  # type: ignore[type-var]
        async for message in events:
            if message is READY:
                # Sent once subscribed: tells the client the stream is live.
                yield ServerSentEvent(retry=RETRY_MS)
                continue
            position = message.get("position")
            yield ServerSentEvent(
                data=encode_message(message),
                id=None if position is None else str(position),
            )


def event_source_response(
    worker: Any,
    *,
    group_id: str | None,
    task_id: str | None,
    after: int | None,
    ping_interval_s: float,
) -> EventSourceResponse:
    """The streaming response of one SSE client."""
    events = task_event_stream(worker, group_id=group_id, task_id=task_id, after=after)
    return EventSourceResponse(
        _frames(events),
        ping=ping_interval_s,
        headers={"Cache-Control": "no-store"},
    )
