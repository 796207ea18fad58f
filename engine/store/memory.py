"""The memory store: the whole log in this process, gone when it ends.

Events are kept by column and turned into :class:`TaskEvent` on read, so a
retained finished task costs a few hundred bytes of log. Payloads of a few
keys are kept as tuples of their values; those holding only atomic values
(the common case) are untracked by the garbage collector, so a large
in-memory log does not slow every full collection down.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

from engine.events import EventType, TaskEvent
from engine.exceptions import ConcurrencyConflictError, StoreError
from engine.store.base import EventStore

__all__ = ["MemoryEventStore"]

_TYPES = list(EventType)
_TYPE_CODE = {type_: code for code, type_ in enumerate(_TYPES)}


def _compact(data: dict[str, Any], shared: dict[tuple[Any, ...], Any]) -> Any:
    """A small payload as one tuple of its keys, then its values: a third
    of a dict's size. A payload of short strings, 64-bit ints and None is
    kept once in ``shared`` (the store's own table) and used by every event
    that has it (a task's ``started`` payload, say, or ``{"result": None}``)."""
    if not data:
        return None
    if len(data) > 4 or type(data) is not dict:
        return data
    compact = (*data, *data.values())
    for value in data.values():
        # Only values equal to nothing of another type (1 == 1.0 == True),
        # and small: the table must not keep a large result alive.
        kind = type(value)
        if kind is str:
            if len(value) > _SHARED_TEXT:
                return compact
        elif kind is int:
            if not -_SHARED_INT <= value < _SHARED_INT:
                return compact
        elif value is not None:
            return compact
    known = shared.get(compact)
    if known is not None:
        return known
    if len(shared) >= _SHARED_ENTRIES:
        shared.clear()  # the payloads in use come back at once
    shared[compact] = compact
    return compact


# What a store's table of shared payloads holds at most (see _compact).
_SHARED_ENTRIES = 4096
_SHARED_TEXT = 64
_SHARED_INT = 2**63


def _expand(stored: Any) -> dict[str, Any]:
    if stored is None:
        return {}
    if type(stored) is tuple:
        half = len(stored) // 2
        return dict(zip(stored[:half], stored[half:], strict=True))
    return stored  # type: ignore[no-any-return]


class MemoryEventStore(EventStore):
    """An :class:`EventStore` in Python lists; payloads are kept as objects.

    The log is stored by column (ids, versions with type codes, times,
    payloads, links to the task's previous event):
    a list of per-event tuples would be traversed by every full garbage
    collection, because a tuple holding a dict is never untracked, and
    those traversals cost a quarter of the run time of a large log.
    """

    persistent = False
    url = "memory://"

    def __init__(self) -> None:
        self._task_ids: list[str] = []
        # version * 8 + the type's code, one number per event.
        self._versions = array("q")
        self._ats: list[Any] = []
        self._datas: list[Any] = []
        # Each task's last position; each event links to its task's
        # previous one (0 for the first), so an append allocates nothing.
        self._last: dict[str, int] = {}
        self._previous = array("q")
        # Payloads of small atomic values, each kept once (see _compact).
        self._shared: dict[tuple[Any, ...], Any] = {}
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
        return [self._add(event) for event in events]

    def append_fields(
        self,
        task_id: str,
        version: int,
        type_: EventType,
        at: Any,
        data: dict[str, Any],
    ) -> int:
        """Append one event given by its fields, in place, and return its
        position: the journal's path, which builds no ``TaskEvent``
        (:meth:`event_at` builds one when it is read)."""
        if self._closed:
            raise StoreError("The memory store is closed; no more appends.")
        last = self._last.get(task_id, 0)
        if version != ((self._versions[last - 1] >> 3) + 1 if last else 1):
            self._check_versions(
                (TaskEvent.build(None, task_id, version, type_, at, data),)
            )
        # _add, inlined: this runs once per event of every task.
        task_ids = self._task_ids
        task_ids.append(task_id)
        self._versions.append(version << 3 | _TYPE_CODE[type_])
        self._ats.append(at)
        self._datas.append(_compact(data, self._shared))
        self._previous.append(last)
        position = self._last[task_id] = len(task_ids)
        return position

    def _add(self, event: TaskEvent) -> int:
        task_id = event.task_id
        self._task_ids.append(task_id)
        self._versions.append(event.version << 3 | _TYPE_CODE[event.type])
        self._ats.append(event.at)
        self._datas.append(_compact(event.data, self._shared))
        self._previous.append(self._last.get(task_id, 0))
        position = self._last[task_id] = len(self._task_ids)
        return position

    def _check_versions(self, events: Sequence[TaskEvent]) -> None:
        expected: dict[str, int] = {}
        for event in events:
            task_id = event.task_id
            if task_id not in expected:
                last = self._last.get(task_id, 0)
                expected[task_id] = (self._versions[last - 1] >> 3) + 1 if last else 1
            if event.version != expected[task_id]:
                raise ConcurrencyConflictError(
                    f"Task {task_id!r} cannot take version {event.version}: "
                    f"the next version in the log is {expected[task_id]}.",
                    task_id=task_id,
                    version=event.version,
                )
            expected[task_id] += 1

    def event_at(self, position: int) -> TaskEvent:
        """The event at ``position`` (a new object at each call)."""
        return self._event(position)

    def task_id_at(self, position: int) -> str:
        """The task id of the event at ``position``."""
        return self._task_ids[position - 1]

    def _event(self, position: int) -> TaskEvent:
        index = position - 1
        coded = self._versions[index]
        return TaskEvent.build(
            position,
            self._task_ids[index],
            coded >> 3,
            _TYPES[coded & 7],
            self._ats[index],
            _expand(self._datas[index]),
        )

    async def read(self, after: int = 0, limit: int | None = None) -> list[TaskEvent]:
        size = len(self._task_ids)
        end = size if limit is None else min(size, after + limit)
        return [self._event(p) for p in range(after + 1, end + 1)]

    async def read_task(self, task_id: str) -> list[TaskEvent]:
        positions = []
        position = self._last.get(task_id, 0)
        while position:
            positions.append(position)
            position = self._previous[position - 1]
        return [self._event(p) for p in reversed(positions)]

    async def last_position(self) -> int:
        return len(self._task_ids)
