"""One subscriber's stream of task events: missed events from the log, then
live ones from the bus, without gaps or duplicates.

Order of operations is what makes a resumed stream exact. The stream
subscribes first, then reads the log after the client's last position, then
drains the live queue, skipping every position it already sent. An event
committed before the log read is in the read; one committed after it was
published after the subscription, so it is in the queue. The same catch-up
runs when the bus reports an overflow. SSE and WebSocket endpoints both
read this stream.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from engine.api.render import group_of, log_message, normalise_live, progress_at
from engine.bus import OVERFLOW
from engine.events import TaskEvent
from engine.exceptions import UsageError

__all__ = ["READY", "LogCursor", "parse_last_event_id", "task_event_stream"]

logger = logging.getLogger(__name__)

READY: dict[str, Any] = {"type": "subscribed"}
"""Yielded once, as soon as the stream is subscribed to the bus."""

LOG_BATCH = 1000


def parse_last_event_id(raw: str | None) -> int | None:
    """The log position a client resumes after, or None for a fresh stream.

    Raises:
        UsageError: ``raw`` is not a non-negative integer.
    """
    if raw is None or not raw.strip():
        return None
    value = raw.strip()
    if not value.isdecimal() or not value.isascii():
        raise UsageError(
            f"Last-Event-ID must be the log position of an event (a "
            f"non-negative integer), not {raw[:40]!r}; drop the header to "
            "receive only new events.",
        )
    return int(value)


class LogCursor:
    """Reads the log after a position and renders the matching events.

    Attributes:
        position: The last log position read (matching or not).
    """

    def __init__(self, worker: Any, group_id: str | None, task_id: str | None) -> None:
        self._worker = worker
        self._group_id = group_id
        self._task_id = task_id
        self._progress: dict[str, float] = {}
        self.position = 0

    def matches(self, message: dict[str, Any]) -> bool:
        """True if a live message passes this stream's filters."""
        if self._task_id is not None and message.get("task_id") != self._task_id:
            return False
        return self._group_id is None or message.get("group_id") == self._group_id

    async def read_after(self, after: int) -> AsyncIterator[dict[str, Any]]:
        """Yield the matching events after ``after``, up to the log's end."""
        self.position = max(self.position, after)
        store = self._worker.store
        while True:
            batch = await store.read(self.position, LOG_BATCH)
            if not batch:
                return
            for event in batch:
                message = self._render(event)
                if message is not None:
                    yield message
            self.position = batch[-1].position

    def _render(self, event: TaskEvent) -> dict[str, Any] | None:
        if self._task_id is not None and event.task_id != self._task_id:
            return None
        info = self._worker.get_task_info(event.task_id)
        if self._group_id is not None and group_of(event, info) != self._group_id:
            return None
        seen = self._progress.get(event.task_id)
        progress = progress_at(event, info, seen)
        self._progress[event.task_id] = progress
        return log_message(event, info, progress)


async def task_event_stream(
    worker: Any,
    *,
    group_id: str | None = None,
    task_id: str | None = None,
    after: int | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Yield :data:`READY`, the events missed after ``after``, then live ones.

    The subscription is released when the generator is closed or cancelled,
    which is what a client disconnecting does to it.

    Args:
        worker: The worker whose bus and store are read.
        group_id: Only events of this group.
        task_id: Only events of this task.
        after: The last log position the client has; None starts live.
    """
    manager = worker.events
    subscriber_id, queue = manager.subscribe(group_id)
    cursor = LogCursor(worker, group_id, task_id)
    try:
        yield READY
        sent = 0
        if after is not None:
            async for message in cursor.read_after(after):
                yield message
            # Positions up to the log's end at the read were covered by it,
            # even when ``after`` pointed past that end (then none were).
            end = await worker.store.last_position()
            sent = min(cursor.position, end)
        while True:
            message = await queue.get()
            if message.get("type") == OVERFLOW:
                sent = await _catch_up(cursor, message, sent)
                async for missed in _replay(cursor):
                    yield missed
                sent = max(sent, cursor.position)
                continue
            position = message.get("position")
            if position is not None:
                if position <= sent:
                    continue
                sent = position
            if cursor.matches(message):
                yield normalise_live(message)
    finally:
        manager.unsubscribe(subscriber_id)


async def _catch_up(cursor: LogCursor, marker: dict[str, Any], sent: int) -> int:
    resume = marker.get("resume_after_position") or 0
    logger.warning(
        "Stream fell behind; catching up from the log",
        extra={
            "action": "stream_caught_up",
            "dropped": marker.get("dropped"),
            "position": max(sent, resume),
        },
    )
    cursor.position = max(sent, resume)
    return cursor.position


def _replay(cursor: LogCursor) -> AsyncIterator[dict[str, Any]]:
    return cursor.read_after(cursor.position)
