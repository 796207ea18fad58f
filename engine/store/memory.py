"""The memory store: the whole log in this process, gone when it ends.

Events are kept as compact tuples and turned into :class:`TaskEvent` on read,
so a retained finished task costs a few hundred bytes of log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.events import EventType, TaskEvent
from engine.exceptions import ConcurrencyConflictError, StoreError
from engine.store.base import EventStore

__all__ = ["MemoryEventStore"]

_Row = tuple[str, int, EventType, Any, dict[str, Any]]


class MemoryEventStore(EventStore):
    """An :class:`EventStore` in a Python list; payloads are kept as objects."""

    persistent = False
    url = "memory://"

    def __init__(self) -> None:
        self._rows: list[_Row] = []
        self._by_task: dict[str, list[int]] = {}
        self._closed = False

    async def open(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True

    async def append(self, events: Sequence[TaskEvent]) -> list[int]:
        return self.append_now(events)

    def append_now(self, events: Sequence[TaskEvent]) -> list[int]:
        """Append in place; the memory store never waits."""
        if self._closed:
            raise StoreError("The memory store is closed; no more appends.")
        self._check_versions(events)
        rows, by_task = self._rows, self._by_task
        positions = []
        for event in events:
            rows.append(
                (event.task_id, event.version, event.type, event.at, event.data)
            )
            position = len(rows)
            by_task.setdefault(event.task_id, []).append(position)
            positions.append(position)
        return positions

    def append_one(self, event: TaskEvent) -> int:
        """Append a single event in place and return its position."""
        if self._closed:
            raise StoreError("The memory store is closed; no more appends.")
        task_id = event.task_id
        positions = self._by_task.get(task_id)
        expected = len(positions) + 1 if positions is not None else 1
        if event.version != expected:
            self._check_versions((event,))
        rows = self._rows
        rows.append((task_id, event.version, event.type, event.at, event.data))
        position = len(rows)
        if positions is None:
            self._by_task[task_id] = [position]
        else:
            positions.append(position)
        return position

    def _check_versions(self, events: Sequence[TaskEvent]) -> None:
        expected: dict[str, int] = {}
        for event in events:
            task_id = event.task_id
            if task_id not in expected:
                expected[task_id] = len(self._by_task.get(task_id, ())) + 1
            if event.version != expected[task_id]:
                raise ConcurrencyConflictError(
                    f"Task {task_id!r} cannot take version {event.version}: "
                    f"the next version in the log is {expected[task_id]}.",
                    task_id=task_id,
                    version=event.version,
                )
            expected[task_id] += 1

    def _event(self, position: int) -> TaskEvent:
        task_id, version, type_, at, data = self._rows[position - 1]
        return TaskEvent.build(position, task_id, version, type_, at, data)

    async def read(self, after: int = 0, limit: int | None = None) -> list[TaskEvent]:
        end = len(self._rows) if limit is None else min(len(self._rows), after + limit)
        return [self._event(p) for p in range(after + 1, end + 1)]

    async def read_task(self, task_id: str) -> list[TaskEvent]:
        return [self._event(p) for p in self._by_task.get(task_id, ())]

    async def last_position(self) -> int:
        return len(self._rows)
