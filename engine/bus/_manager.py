"""The in-process event manager: route each published event to its subscribers.

The worker calls :meth:`EventManager.publish_event` for every task event; the
call is synchronous, never waits on a subscriber and keeps bounded memory.
Imports only :mod:`engine.exceptions` and the queue module of this package.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from engine.bus._queue import (
    COUNTS,
    Count,
    Event,
    EventList,
    Subscribed,
    SubscriberQueue,
    count,
)
from engine.exceptions import UsageError

logger = logging.getLogger(__name__)

QueueRef = weakref.ref[SubscriberQueue]


class EventFilter(Protocol):
    """Anything with a ``match(event) -> bool`` method."""

    def match(self, event: Event) -> bool:
        """Return True if ``event`` passes the filter."""
        ...


class GroupFilter:
    """Match events whose group field equals a given group id.

    Args:
        group_id: The group to keep.
        group_id_field: The event key holding the group id.
    """

    def __init__(self, group_id: str, group_id_field: str = "group_id") -> None:
        self.group_id = group_id
        self.group_id_field = group_id_field

    def match(self, event: Event) -> bool:
        """Return True if the event belongs to this filter's group."""
        return bool(event.get(self.group_id_field) == self.group_id)

    def __repr__(self) -> str:
        return f"GroupFilter({self.group_id!r}, {self.group_id_field!r})"


class _Entry(NamedTuple):
    ref: QueueRef
    group_id: str | None


def _as_predicate(
    event_filter: EventFilter | Callable[[Event], bool] | None,
) -> Callable[[Event], bool] | None:
    if event_filter is None:
        return None
    match = getattr(event_filter, "match", None)
    if callable(match):
        return match  # type: ignore[no-any-return]
    if callable(event_filter):
        return event_filter
    raise UsageError(
        f"An event filter must have a match(event) method or be callable, "
        f"got {event_filter!r}."
    )


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise UsageError(f"{name} must be a positive number, got {value!r}.")
    return value


class EventManager:
    """Publish events to subscribers without ever waiting on them.

    Each subscriber reads its own bounded :class:`SubscriberQueue`. Events of
    one group reach a subscriber in publish order. Publishing must happen on
    the event loop thread that the subscribers' queues belong to.

    Args:
        result_ttl: Seconds that recent events and processed ids are kept.
        max_queue_size: Capacity of each subscriber's queue; beyond it the
            subscriber's events are dropped and it later gets a marker.
        max_recent_events: How many recent events :meth:`get_recent_events`
            can return at most.
        max_processed_ids: How many event ids :meth:`is_processed` remembers.
        overflow_horizon: Seconds a subscriber may stay overflowed before it
            is removed as gone.
        cleanup_interval: Seconds between background clean-ups once started.
        clock: Monotonic clock in seconds; tests inject their own.
    """

    def __init__(
        self,
        result_ttl: float = 300,
        *,
        max_queue_size: int = 10_000,
        max_recent_events: int = 1_000,
        max_processed_ids: int = 10_000,
        overflow_horizon: float = 60.0,
        cleanup_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = _positive("result_ttl", result_ttl)
        self._max_queue_size = int(_positive("max_queue_size", max_queue_size))
        self._max_processed = int(_positive("max_processed_ids", max_processed_ids))
        self._horizon_s = _positive("overflow_horizon", overflow_horizon)
        self._cleanup_interval_s = _positive("cleanup_interval", cleanup_interval)
        self._clock = clock

        recent_limit = int(_positive("max_recent_events", max_recent_events))
        # Entries: see _UNIQUE below.
        self._recent: deque[tuple[Any, ...]] = deque(maxlen=recent_limit)
        self._processed: OrderedDict[str, float] = OrderedDict()

        # Routing tables are tuples replaced on every change (copy on write),
        # so a publish iterating one is never disturbed by an unsubscribe,
        # an eviction or a weakref callback that happens meanwhile.
        self._entries: dict[str, _Entry] = {}
        self._by_group: dict[str | None, tuple[QueueRef, ...]] = {}
        self._everyone: tuple[QueueRef, ...] = ()
        self._collected: deque[str] = deque()
        self._cleanup_task: asyncio.Task[None] | None = None

    @property
    def result_ttl(self) -> float:
        """Seconds that recent events and processed ids are kept."""
        return self._ttl_s

    @property
    def max_queue_size(self) -> int:
        """Capacity of each subscriber's queue."""
        return self._max_queue_size

    @property
    def subscriber_count(self) -> int:
        """Number of subscribers currently registered."""
        self._reap()
        return len(self._entries)

    async def start(self) -> None:
        """Start the background clean-up of expired and dead entries."""
        task = self._cleanup_task
        # The module-level manager outlives event loops (one per test, say);
        # a task left on a finished loop must not stop a new one starting.
        if (
            task is not None
            and not task.done()
            and task.get_loop() is asyncio.get_running_loop()
        ):
            return
        self._cleanup_task = asyncio.create_task(self._cleanup_loop())
        logger.info("Event manager started", extra={"action": "event_manager_started"})

    async def stop(self) -> None:
        """Stop the background clean-up; subscribers stay registered."""
        task, self._cleanup_task = self._cleanup_task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        logger.info("Event manager stopped", extra={"action": "event_manager_stopped"})

    def subscribe(self, group_id: str | None = None) -> Subscribed:
        """Register a subscriber and return its id and queue.

        The manager keeps only a weak reference to the queue: a subscriber
        that drops its queue without unsubscribing is removed automatically.

        Args:
            group_id: Receive only events published with this group id; None
                receives every event.

        Returns:
            ``(subscriber_id, queue)``; it may also be awaited.
        """
        self._reap()
        subscriber_id = str(uuid.uuid4())
        queue = SubscriberQueue(self._max_queue_size, subscriber_id, group_id)
        collected = self._collected

        def on_collected(_ref: QueueRef, subscriber_id: str = subscriber_id) -> None:
            # Runs inside garbage collection, possibly in the middle of one
            # of our methods, so it only records the id; _reap removes it.
            collected.append(subscriber_id)

        ref = weakref.ref(queue, on_collected)
        self._entries[subscriber_id] = _Entry(ref, group_id)
        if group_id is None:
            self._everyone = (*self._everyone, ref)
        else:
            self._by_group[group_id] = (*self._by_group.get(group_id, ()), ref)
        logger.debug(
            "Subscriber added",
            extra={
                "action": "subscriber_added",
                "subscriber_id": subscriber_id,
                "group_id": group_id,
            },
        )
        return Subscribed(subscriber_id, queue)

    def unsubscribe(self, subscriber_id: str) -> Count:
        """Remove a subscriber; unknown ids are ignored.

        Returns:
            1 if the subscriber was removed, 0 if it was not registered; the
            result may also be awaited.
        """
        self._reap()
        removed = self._remove(subscriber_id)
        if removed:
            logger.debug(
                "Subscriber removed",
                extra={"action": "subscriber_removed", "subscriber_id": subscriber_id},
            )
        return COUNTS[1] if removed else COUNTS[0]

    def publish_event(
        self, event_id: str, group_id: str | None, event_data: Event
    ) -> Count:
        """Put an event on the queue of every matching subscriber.

        Never waits: a full queue makes that subscriber miss the event (it
        learns so from an overflow marker). An ``event_id`` already published
        within ``result_ttl`` (and among the last ``max_processed_ids``) is
        skipped. ``event_data`` is shared by all subscribers, not copied, and
        gets a ``group_id`` key if it has none.

        Returns:
            The number of subscribers the event was queued for; the result
            may also be awaited.
        """
        now_s = self._clock()
        if not self._first_seen(event_id, now_s):
            return COUNTS[0]

        event_data.setdefault("group_id", group_id)
        self._recent.append((now_s, event_data))

        group = self._by_group.get(group_id)
        everyone = self._everyone
        if group is None and not everyone:
            return COUNTS[0]
        delivered = self._deliver(everyone, event_data, now_s)
        if group is not None:
            delivered += self._deliver(group, event_data, now_s)
        return count(delivered)

    def publish_lazy(
        self, event_id: str, group_id: str | None, make_event: Callable[[], Event]
    ) -> Count:
        """Like :meth:`publish_event`, for a publisher whose event dict costs
        something to build: ``make_event`` runs only when a subscriber of the
        event exists, or when :meth:`get_recent_events` reads it later.
        """
        if group_id in self._by_group or self._everyone:
            return self.publish_event(event_id, group_id, make_event())
        now_s = self._clock()
        if self._first_seen(event_id, now_s):
            self._recent.append((now_s, _with_group, (make_event, group_id)))
        return COUNTS[0]

    def publish_unique(
        self,
        route: Callable[..., str | None],
        render: Callable[..., Event],
        *args: Any,
    ) -> int:
        """Publish an event that is unique by construction, such as a task
        event (one per log position): its id is not remembered for
        :meth:`is_processed`. ``route(*args)`` gives its group id and runs
        only when some subscriber exists; ``render(*args)`` builds the event
        dict, with its group id, only when a subscriber of the event exists
        or :meth:`get_recent_events` reads it later. The worker publishes
        every task event this way, so a process with no subscribers pays
        for no message.

        Returns:
            The number of subscribers the event was queued for.
        """
        everyone = self._everyone
        if everyone or self._by_group:
            group = self._by_group.get(route(*args))
            if group is not None or everyone:
                now_s = self._clock()
                event = render(*args)
                self._recent.append((now_s, event, _UNIQUE))
                delivered = self._deliver(everyone, event, now_s) if everyone else 0
                if group is not None:
                    delivered += self._deliver(group, event, now_s)
                return delivered
        self._recent.append((self._clock(), render, args))
        return 0

    def _first_seen(self, event_id: str, now_s: float) -> bool:
        processed = self._processed
        seen_at_s = processed.get(event_id)
        if seen_at_s is not None:
            if now_s - seen_at_s <= self._ttl_s:
                return False
            processed.move_to_end(event_id)
        processed[event_id] = now_s
        if len(processed) > self._max_processed:
            processed.popitem(last=False)
        return True

    def get_recent_events(
        self, filter: EventFilter | Callable[[Event], bool] | None = None
    ) -> EventList:
        """Return the retained events, oldest first, that pass ``filter``.

        Args:
            filter: An object with ``match(event)``, a plain callable, or
                None for every retained event.

        Returns:
            A list of event dicts; it may also be awaited.
        """
        predicate = _as_predicate(filter)
        self._expire(self._clock())
        self.render_deferred()
        events = (entry[1] for entry in self._recent)
        if predicate is None:
            return EventList(events)
        return EventList(event for event in events if predicate(event))

    def render_deferred(self) -> None:
        """Build every retained event whose dict is still deferred: its
        publisher is about to let go of what the dicts are built from (a
        worker stopping calls this on an event manager it does not own)."""
        recent = self._recent
        for index, entry in enumerate(recent):
            if len(entry) == 3 and entry[2] is not _UNIQUE:  # still deferred
                recent[index] = _built(entry)

    def is_processed(self, event_id: str) -> bool:
        """Return True if ``event_id`` was published within ``result_ttl``.

        Ids given to :meth:`publish_event` and :meth:`publish_lazy` are
        remembered (the last ``max_processed_ids``). Events published with
        :meth:`publish_unique` (the worker's) keep no id: they count while
        they are among the recent events, found by their ``event_id`` key.
        """
        now_s = self._clock()
        seen_at_s = self._processed.get(event_id)
        if seen_at_s is not None and now_s - seen_at_s <= self._ttl_s:
            return True
        self._expire(now_s)
        recent = self._recent
        for index in range(len(recent) - 1, -1, -1):  # the newest first
            entry = recent[index]
            if len(entry) != 3 or entry[1] is _with_group:
                continue  # not a unique event: its id is remembered or gone
            if entry[2] is not _UNIQUE:  # deferred: build it once, keep it
                entry = recent[index] = _built(entry)
            if entry[1].get("event_id") == event_id:
                return True
        return False

    def prune(self) -> None:
        """Drop expired entries and remove gone or long-overflowed subscribers.

        The background task started by :meth:`start` calls this regularly.
        """
        now_s = self._clock()
        self._expire(now_s)
        self._reap()
        for subscriber_id, entry in list(self._entries.items()):
            queue = entry.ref()
            if queue is not None and queue.dropped:
                self._evict_if_stale(queue, now_s)
            elif queue is None:
                self._remove(subscriber_id)

    def _deliver(self, refs: tuple[QueueRef, ...], event: Event, now_s: float) -> int:
        delivered = 0
        for ref in refs:
            queue = ref()
            if queue is None:
                continue
            # The common case inlined (SubscriberQueue.offer has all cases):
            # this loop body runs once per event and subscriber.
            items = queue._queue
            if queue.marker is None and len(items) < queue.capacity:
                items.append(event)
                if not queue._unfinished_tasks:
                    queue._finished.clear()
                queue._unfinished_tasks += 1
                if queue._getters:
                    queue._wakeup_next(queue._getters)
                delivered += 1
            elif queue.offer(event, now_s):
                delivered += 1
            elif queue.dropped == 1:
                self._log_overflow(queue)
            else:
                self._evict_if_stale(queue, now_s)
        return delivered

    def _log_overflow(self, queue: SubscriberQueue) -> None:
        logger.warning(
            "Subscriber queue full, dropping its events until it drains",
            extra={
                "action": "subscriber_overflowed",
                "subscriber_id": queue.subscriber_id,
                "group_id": queue.group_id,
                "max_queue_size": self._max_queue_size,
            },
        )

    def _evict_if_stale(self, queue: SubscriberQueue, now_s: float) -> None:
        if now_s - queue.overflow_since_s <= self._horizon_s:
            return
        if self._remove(queue.subscriber_id):
            logger.warning(
                "Subscriber removed after staying overflowed for %.0f s",
                now_s - queue.overflow_since_s,
                extra={
                    "action": "subscriber_evicted",
                    "subscriber_id": queue.subscriber_id,
                    "group_id": queue.group_id,
                    "dropped": queue.dropped,
                },
            )

    def _remove(self, subscriber_id: str) -> bool:
        entry = self._entries.pop(subscriber_id, None)
        if entry is None:
            return False
        queue = entry.ref()
        if queue is not None:
            queue.detach()
        if entry.group_id is None:
            self._everyone = tuple(r for r in self._everyone if r is not entry.ref)
            return True
        remaining = tuple(
            r for r in self._by_group.get(entry.group_id, ()) if r is not entry.ref
        )
        if remaining:
            self._by_group[entry.group_id] = remaining
        else:
            self._by_group.pop(entry.group_id, None)
        return True

    def _reap(self) -> None:
        while self._collected:
            subscriber_id = self._collected.popleft()
            if self._remove(subscriber_id):
                logger.warning(
                    "Subscriber removed because its queue was garbage collected",
                    extra={
                        "action": "subscriber_collected",
                        "subscriber_id": subscriber_id,
                    },
                )

    def _expire(self, now_s: float) -> None:
        oldest_kept_s = now_s - self._ttl_s
        recent = self._recent
        while recent and recent[0][0] < oldest_kept_s:
            recent.popleft()
        processed = self._processed
        if not processed:
            return
        while processed and next(iter(processed.values())) < oldest_kept_s:
            processed.popitem(last=False)
        if not processed:
            # A dict never shrinks its table as items go; a new one releases
            # what a burst of publishes grew once the burst has expired.
            self._processed = OrderedDict()

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self._cleanup_interval_s)
            try:
                self.prune()
            except Exception:
                logger.exception(
                    "Event manager clean-up failed",
                    extra={"action": "event_cleanup_failed"},
                )


def _with_group(make_event: Callable[[], Event], group_id: str | None) -> Event:
    event = make_event()
    event.setdefault("group_id", group_id)
    return event


# Recent entries: (time, event dict) as published; (time, render, args) not
# built yet; (time, event dict, _UNIQUE) built from a publish_unique one.
_UNIQUE = object()


def _built(entry: tuple[Any, ...]) -> tuple[Any, ...]:
    at_s, render, args = entry
    event = render(*args)
    return (at_s, event) if render is _with_group else (at_s, event, _UNIQUE)


event_manager = EventManager()
"""The process-wide manager the worker publishes to by default."""
