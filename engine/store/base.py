"""The ``EventStore`` contract every backend implements.

A store appends events atomically in batches and reads them back in log
order. It may import :mod:`engine.events` and :mod:`engine.exceptions` only.
"""

from __future__ import annotations

import abc
import contextlib
import gc
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from engine.events import TaskEvent

__all__ = ["EventStore", "collector_paused"]

#: Batches smaller than this are decoded with the collector running.
GC_PAUSE_MIN_ROWS = 1000


@contextlib.contextmanager
def collector_paused(size: int) -> Iterator[None]:
    """Pause the cyclic garbage collector while a large batch is decoded or
    folded.

    Decoding allocates a few containers per event and frees none, so the
    collector runs every 700 allocations and walks the young batch again each
    time, finding nothing: events hold no reference cycles. The pause lasts
    one batch; a collector the application disabled stays disabled.
    """
    if size < GC_PAUSE_MIN_ROWS or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class EventStore(abc.ABC):
    """An append-only log of :class:`TaskEvent` with a global order.

    ``position`` is assigned by the store and grows in commit order: a reader
    that has seen position P and asks for events after P never misses one that
    commits later. ``(task_id, version)`` is unique: a second writer of the
    same version gets :class:`~engine.exceptions.ConcurrencyConflictError`.
    """

    #: Whether payloads must survive JSON encoding (False only for memory).
    persistent: bool = True

    #: The URL the store was opened from, without a password.
    url: str = ""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect, and prepare the schema when the backend allows it."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; appends after close are refused."""

    @abc.abstractmethod
    async def append(self, events: Sequence[TaskEvent]) -> list[int]:
        """Write ``events`` in one transaction and return their positions.

        All or nothing: when one event conflicts, none is written.

        Raises:
            ConcurrencyConflictError: an event's ``(task_id, version)`` exists.
            StoreUnavailableError: the backend cannot be reached.
        """

    @abc.abstractmethod
    async def read(self, after: int = 0, limit: int | None = None) -> list[TaskEvent]:
        """Events with a position greater than ``after``, in log order."""

    @abc.abstractmethod
    async def read_task(self, task_id: str) -> list[TaskEvent]:
        """One task's events, in version order."""

    @abc.abstractmethod
    async def last_position(self) -> int:
        """The highest position written so far (0 for an empty log)."""

    async def iter_fields(
        self, after: int = 0, batch_size: int = 10_000
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Like :meth:`iter_batches`, each event as a dict of its fields
        (``TaskEvent.__dict__``'s keys): what a replay folds. A store may
        build these dicts without building events."""
        async for batch in self.iter_batches(after, batch_size):
            yield [event.__dict__ for event in batch]

    async def iter_batches(
        self, after: int = 0, batch_size: int = 10_000
    ) -> AsyncIterator[list[TaskEvent]]:
        """Read the whole log after ``after`` in batches, in log order."""
        while True:
            batch = await self.read(after, batch_size)
            if not batch:
                return
            yield batch
            position = batch[-1].position
            assert position is not None
            after = position
