"""The bounded queue each subscriber reads, and the overflow marker it carries.

A :class:`SubscriberQueue` never makes its publisher wait: when it holds
``capacity`` events it appends one overflow marker, counts every event it drops
in that marker, and takes events again once its reader has read the marker.
Imports nothing of ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, NamedTuple, Self

logger = logging.getLogger(__name__)

Event = dict[str, Any]
"""An event as subscribers see it: the ``event_data`` dict of a publish."""

OVERFLOW = "overflow"
"""The ``type`` of the marker a subscriber receives after events were dropped."""


class SubscriberQueue(asyncio.Queue[Event]):
    """A subscriber's bounded queue that drops events instead of blocking.

    For its reader it is an ordinary :class:`asyncio.Queue`. It holds at most
    ``capacity`` events plus one slot kept free for the overflow marker. The
    manager delivers with :meth:`offer`; once the queue is full the marker is
    appended behind the last event delivered and every further event only
    raises the marker's ``dropped`` count. The marker is final when the
    reader takes it, and from then on events are delivered again.

    Attributes:
        subscriber_id: The id :meth:`EventManager.subscribe` returned.
        group_id: The group subscribed to, or None for every event.
        capacity: How many events the queue holds before it drops.
        marker: The unread overflow marker while dropping, else None.
        overflow_since_s: Clock reading when the current overflow began.
        subscribed: False once the manager no longer feeds this queue.
    """

    if TYPE_CHECKING:
        # asyncio.Queue's internals (CPython 3.11 to 3.13), which offer and
        # the manager's delivery loop use in place of put_nowait: they run
        # once per event and subscriber. test_bus_queue.py checks that the
        # result behaves as put_nowait's (wake-up, task_done and join).
        _unfinished_tasks: int
        _finished: asyncio.Event
        _getters: deque[asyncio.Future[None]]

        def _wakeup_next(self, waiters: deque[asyncio.Future[None]]) -> None: ...

    def __init__(self, capacity: int, subscriber_id: str, group_id: str | None) -> None:
        super().__init__(capacity + 1)
        self.subscriber_id = subscriber_id
        self.group_id = group_id
        self.capacity = capacity
        self.marker: Event | None = None
        self.overflow_since_s = 0.0
        self.subscribed = True

    @property
    def dropped(self) -> int:
        """Events dropped in the current overflow; 0 when not dropping."""
        return 0 if self.marker is None else int(self.marker["dropped"])

    def _init(self, maxsize: int) -> None:
        # asyncio.Queue names _init, _get and _put as its subclass hooks; the
        # base class's qsize() and empty() read this same attribute.
        self._queue: deque[Event] = deque()

    def _get(self) -> Event:
        item = self._queue.popleft()
        if item is self.marker:
            self._resumed(item)
        return item

    def get_nowait(self) -> Event:
        """Take the next event, or raise :class:`asyncio.QueueEmpty`."""
        # The base class's version also wakes blocked putters; a subscriber
        # queue never has any, since the manager drops instead of waiting.
        queue = self._queue
        if not queue:
            raise asyncio.QueueEmpty
        item = queue.popleft()
        if item is self.marker:
            self._resumed(item)
        return item

    async def get(self) -> Event:
        """Take the next event, waiting for one if the queue is empty."""
        if self._queue:
            return self.get_nowait()
        return await super().get()

    async def get_batch(self, max_items: int = 1_000) -> list[Event]:
        """Take up to ``max_items`` events at once, waiting for at least one.

        For readers that want throughput: one call instead of one per event.
        An overflow marker ends a batch, so a batch never spans an overflow.

        Raises:
            ValueError: ``max_items`` is below 1.
        """
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items!r}.")
        queue = self._queue
        if not queue:
            return [await super().get(), *self._take(max_items - 1)]
        return self._take(max_items)

    def _take(self, max_items: int) -> list[Event]:
        queue = self._queue
        marker = self.marker
        if marker is None and len(queue) <= max_items:
            items = list(queue)
            queue.clear()
            return items
        items = []
        while queue and len(items) < max_items:
            item = self.get_nowait()
            items.append(item)
            if item is marker:
                break
        return items

    def _resumed(self, item: Event) -> None:
        self.marker = None
        logger.info(
            "Subscriber resumed after dropping %d events",
            item["dropped"],
            extra={
                "action": "subscriber_resumed",
                "subscriber_id": self.subscriber_id,
                "dropped": item["dropped"],
                "position": item["resume_after_position"],
            },
        )

    def offer(self, event: Event, now_s: float) -> bool:
        """Queue ``event`` if there is room, else count it as dropped.

        Args:
            event: The event to deliver.
            now_s: The manager's clock reading, kept to time an overflow.

        Returns:
            True if the event was queued.
        """
        marker = self.marker
        if marker is not None:
            marker["dropped"] += 1
            return False
        queue = self._queue
        if len(queue) < self.capacity:
            # put_nowait inlined: this runs once per event and subscriber.
            queue.append(event)
            if not self._unfinished_tasks:
                self._finished.clear()
            self._unfinished_tasks += 1
            if self._getters:
                self._wakeup_next(self._getters)
            return True
        self._begin_overflow(now_s)
        return False

    def detach(self) -> None:
        """Mark the queue as no longer fed, also in an unread marker."""
        self.subscribed = False
        if self.marker is not None:
            self.marker["subscribed"] = False

    def _begin_overflow(self, now_s: float) -> None:
        last = self._queue[-1] if self._queue else {}
        self.marker = {
            "type": OVERFLOW,
            "dropped": 1,
            "resume_after_position": last.get("position"),
            "group_id": self.group_id,
            "subscribed": self.subscribed,
        }
        self.overflow_since_s = now_s
        self.put_nowait(self.marker)


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
