"""A scoped subscription: subscribe on ``async with``, read, unsubscribe on exit.

Imports only :mod:`engine.exceptions` and the other modules of this package.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from engine.bus import _manager
from engine.bus._queue import OVERFLOW, Event, SubscriberQueue
from engine.exceptions import TaskEngineError, UsageError

TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})
"""Event types (or statuses) after which a task emits no further event."""


class SubscriptionOverflowError(TaskEngineError):
    """Events were dropped because the subscriber read too slowly."""

    default_message = (
        "The subscriber fell behind and some events were dropped; read the "
        "event log after 'resume_after_position' to catch up."
    )


def is_terminal(event: Event) -> bool:
    """Return True if the event's type or status is a terminal state."""
    status: Any = event.get("status")
    status = getattr(status, "value", status)
    return event.get("type") in TERMINAL_STATES or status in TERMINAL_STATES


class EventSubscription:
    """Subscribe to a group for the duration of an ``async with`` block.

    Inside the block, read events with ``async for``, :meth:`collect_events`
    or :meth:`wait_for_completion_event`. Overflow markers (``type ==
    "overflow"``) are yielded like events by ``async for`` and
    :meth:`collect_events`.

    Args:
        group_id: The group to follow, or None for every event.
        manager: The manager to subscribe to; the module-level
            ``event_manager`` when None.
    """

    def __init__(
        self, group_id: str | None, manager: _manager.EventManager | None = None
    ) -> None:
        self.group_id = group_id
        self._manager = manager
        self._subscriber_id: str | None = None
        self._queue: SubscriberQueue | None = None

    @property
    def manager(self) -> _manager.EventManager:
        """The manager this subscription registers with."""
        if self._manager is None:
            return _manager.event_manager
        return self._manager

    @property
    def subscriber_id(self) -> str | None:
        """The subscriber id while entered, else None."""
        return self._subscriber_id

    @property
    def queue(self) -> SubscriberQueue:
        """The queue events arrive on, once the subscription has been entered."""
        if self._queue is None:
            raise UsageError(
                "This EventSubscription is not active; enter it with "
                "'async with' before reading events."
            )
        return self._queue

    async def __aenter__(self) -> Self:
        self._subscriber_id, self._queue = self.manager.subscribe(self.group_id)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._subscriber_id is not None:
            self.manager.unsubscribe(self._subscriber_id)
        self._subscriber_id = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        queue = self.queue
        if not queue.subscribed and queue.empty():
            raise StopAsyncIteration
        return await queue.get()

    async def collect_events(
        self,
        until_condition: Callable[[Event], bool] | None = None,
        timeout: float | None = 30.0,  # noqa: ASYNC109 - the API.md name
    ) -> list[Event]:
        """Collect events until one satisfies ``until_condition`` or time runs out.

        Args:
            until_condition: Stop after the first event for which it returns
                True (that event is included); None collects until timeout.
            timeout: Seconds to collect for; None waits without limit.

        Returns:
            The events received, in arrival order.
        """
        events: list[Event] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async for event in self:
                    events.append(event)
                    if until_condition is not None and until_condition(event):
                        break
        return events

    async def wait_for_completion_event(
        self,
        timeout: float | None = 30.0,  # noqa: ASYNC109 - the API.md name
    ) -> Event | None:
        """Return the first event whose type or status is terminal.

        Args:
            timeout: Seconds to wait; None waits without limit.

        Returns:
            The completed, failed or cancelled event, or None on timeout.

        Raises:
            SubscriptionOverflowError: Events were dropped before a terminal
                event arrived, so it may have been among them.
        """
        try:
            async with asyncio.timeout(timeout):
                async for event in self:
                    if event.get("type") == OVERFLOW:
                        raise SubscriptionOverflowError(
                            dropped=event["dropped"],
                            resume_after_position=event["resume_after_position"],
                        )
                    if is_terminal(event):
                        return event
        except TimeoutError:
            return None
        return None
