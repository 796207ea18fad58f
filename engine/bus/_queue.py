"""The bounded queue each subscriber reads, and the overflow marker it emits.

A :class:`SubscriberQueue` never makes its publisher wait: when it is full it
counts the events it drops and, once its reader has drained it to half, puts a
single overflow marker saying how many were lost and from which log position
to catch up. Imports nothing of ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Generator
from typing import Any, NamedTuple, Self

logger = logging.getLogger(__name__)

Event = dict[str, Any]
"""An event as subscribers see it: the ``event_data`` dict of a publish."""

OVERFLOW = "overflow"
"""The ``type`` of the marker a subscriber receives after events were dropped."""


class SubscriberQueue(asyncio.Queue[Event]):
    """A subscriber's bounded queue that drops events instead of blocking.

    It is an ordinary :class:`asyncio.Queue` for its reader. The manager
    fills it with ``put_nowait``; when that fails the manager calls
    :meth:`begin_overflow` and then adds each further event to
    :attr:`dropped` until the reader has drained the queue to half its size, at which
    point the overflow marker is appended behind the events already queued.

    Attributes:
        subscriber_id: The id :meth:`EventManager.subscribe` returned.
        group_id: The group subscribed to, or None for every event.
        dropped: Events dropped in the current overflow; 0 when not dropping.
        overflow_since_s: Clock reading when the current overflow began.
        subscribed: False once the manager no longer feeds this queue.
    """

    def __init__(self, maxsize: int, subscriber_id: str, group_id: str | None) -> None:
        super().__init__(maxsize)
        self.subscriber_id = subscriber_id
        self.group_id = group_id
        self.dropped = 0
        self.overflow_since_s = 0.0
        self.subscribed = True
        self._resume_size = maxsize // 2
        self._resume_after_position: Any = None

    def _init(self, maxsize: int) -> None:
        # asyncio.Queue names _init, _get and _put as its subclass hooks; the
        # base class's qsize() and empty() read this same attribute.
        self._queue: deque[Event] = deque()

    def _get(self) -> Event:
        item = self._queue.popleft()
        if self.dropped and len(self._queue) <= self._resume_size:
            self._put_marker()
        return item

    def begin_overflow(self, now_s: float) -> None:
        """Start dropping: remember the last position the reader will see.

        Args:
            now_s: The manager's clock reading, kept to time the overflow.
        """
        last = self._queue[-1]
        if last.get("type") == OVERFLOW:
            self._resume_after_position = last.get("resume_after_position")
        else:
            self._resume_after_position = last.get("position")
        self.dropped = 1
        self.overflow_since_s = now_s

    def _put_marker(self) -> None:
        marker: Event = {
            "type": OVERFLOW,
            "dropped": self.dropped,
            "resume_after_position": self._resume_after_position,
            "group_id": self.group_id,
            "subscribed": self.subscribed,
        }
        logger.info(
            "Subscriber resumed after dropping %d events",
            self.dropped,
            extra={
                "action": "subscriber_resumed",
                "subscriber_id": self.subscriber_id,
                "dropped": self.dropped,
                "position": self._resume_after_position,
            },
        )
        self.dropped = 0
        self.put_nowait(marker)


class Subscribed(NamedTuple):
    """What :meth:`EventManager.subscribe` returns: an id and a queue.

    It unpacks like a plain tuple and may also be awaited, which yields the
    same tuple, so code written as ``await manager.subscribe(...)`` works.
    """

    subscriber_id: str
    queue: SubscriberQueue

    def __await__(self) -> Generator[Any, None, Self]:
        yield from ()
        return self


class Count(int):
    """A count of subscribers, usable as an ``int`` or awaited for itself.

    :meth:`EventManager.publish_event` and :meth:`EventManager.unsubscribe`
    return it so that both ``n = publish_event(...)`` and
    ``n = await publish_event(...)`` read naturally.
    """

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, Self]:
        yield from ()
        return self


COUNTS: tuple[Count, ...] = tuple(Count(n) for n in range(1025))
"""Prebuilt counts, so a publish does not allocate one for its result."""


def count(n: int) -> Count:
    """Return ``n`` as a :class:`Count`, reusing a prebuilt one when possible."""
    return COUNTS[n] if n < len(COUNTS) else Count(n)


class EventList(list[Event]):
    """A list of events that may also be awaited for itself."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, Self]:
        yield from ()
        return self
