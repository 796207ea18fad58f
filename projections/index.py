"""Where a process keeps its ``TaskInfo`` projection: a mapping of task id to
``TaskInfo`` that folds events in place and stores long-finished tasks packed.

Unfinished tasks and the last ``hot_limit`` finished ones are kept as a dict
of their field values, which the index owns and folds each event into in
place; a ``TaskInfo`` is built from a copy of those values when one is read,
and kept until the task's next event. So recording an event costs a few dict
stores, no model object, and a ``TaskInfo`` once handed out never changes.
Older finished tasks are kept as a tuple of their field values (about a third
of the size) and rebuilt when read: a worker that keeps a week of finished
tasks in memory pays for their values, not for a model object each. With
``pack_pending``, pending tasks are packed too: a cluster node may hold many
tasks queued in the log for any node, and a packed task is a tuple the
garbage collector stops walking. Imports only engine.events and the fold
module.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterator
from typing import Any

from engine.events import EventType, TaskEvent
from projections.task_info import (
    FINISHED,
    FOLDS,
    PENDING,
    TaskInfo,
    build_info,
    first_values,
    fold_values,
    missing_first,
)

__all__ = ["Context", "IndexLoader", "TaskInfoIndex"]

#: What a published event's message needs of its task, taken when the event
#: is published: ``(metadata, task_type, progress)``.
Context = tuple["dict[str, Any] | None", "str | None", float]

_FIELDS = tuple(TaskInfo.model_fields)


_STATUS = _FIELDS.index("status")
_METADATA = _FIELDS.index("metadata")
_VERSION = _FIELDS.index("version")
_TASK_TYPE = _FIELDS.index("task_type")
_PROGRESS = _FIELDS.index("progress")
_PENDING = PENDING
_QUEUED = EventType.QUEUED
_FINISHED_VALUES = frozenset(status.value for status in FINISHED)


def _pack(values: dict[str, Any]) -> tuple[Any, ...]:
    # A task's field values in field order (the fold writes the status as
    # its string, and a task without metadata has None): a tuple of atomic
    # values only, which the garbage collector stops tracking, so a large
    # projection does not slow every full collection down.
    return tuple(values.values())


def _unpacked_values(packed: tuple[Any, ...]) -> dict[str, Any]:
    # A dict display: several times faster than dict(zip(_FIELDS, packed)),
    # which a cluster node pays for every task it claims (the field order is
    # checked against the model below).
    (
        id_, status, created_at, started_at, completed_at, result, error,
        progress, metadata, from_cache, task_type, priority, attempt,
        error_type, version,
    ) = packed  # fmt: skip
    return {
        "id": id_,
        "status": status,
        "created_at": created_at,
        "started_at": started_at,
        "completed_at": completed_at,
        "result": result,
        "error": error,
        "progress": progress,
        "metadata": metadata,
        "from_cache": from_cache,
        "task_type": task_type,
        "priority": priority,
        "attempt": attempt,
        "error_type": error_type,
        "version": version,
    }


if tuple(_unpacked_values(_FIELDS[:1] + ("pending",) + _FIELDS[2:])) != _FIELDS:
    raise ImportError("projections.index: _unpacked_values lists TaskInfo's fields")


def _unpack(packed: tuple[Any, ...]) -> TaskInfo:
    return build_info(_unpacked_values(packed))


class TaskInfoIndex:
    """A dict-like map of task id to :class:`TaskInfo` (see the module doc)."""

    __slots__ = ("_hot", "_infos", "_packed", "_finished", "hot_limit", "pack_pending")

    def __init__(self, hot_limit: int = 4096, *, pack_pending: bool = False) -> None:
        # Task id -> field values, folded in place.
        self._hot: dict[str, dict[str, Any]] = {}
        # Task id -> the TaskInfo read since its last event (hot tasks only).
        self._infos: dict[str, TaskInfo] = {}
        self._packed: dict[str, tuple[Any, ...]] = {}
        self._finished: deque[str] = deque()
        self.hot_limit = hot_limit
        self.pack_pending = pack_pending

    def __len__(self) -> int:
        return len(self._hot) + len(self._packed)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._hot or task_id in self._packed

    def __iter__(self) -> Iterator[str]:
        yield from list(self._hot)
        yield from list(self._packed)

    def __getitem__(self, task_id: str) -> TaskInfo:
        info = self.get(task_id)
        if info is None:
            raise KeyError(task_id)
        return info

    def get(self, task_id: str, default: TaskInfo | None = None) -> TaskInfo | None:
        """The task's info, or ``default``."""
        info = self._infos.get(task_id)
        if info is not None:
            return info
        values = self._hot.get(task_id)
        if values is not None:
            info = self._infos[task_id] = build_info(values.copy())
            return info
        packed = self._packed.get(task_id)
        return _unpack(packed) if packed is not None else default

    def _take_values(self, task_id: str) -> dict[str, Any] | None:
        # A task's field values for IndexLoader, removed from the index.
        self._infos.pop(task_id, None)
        values = self._hot.pop(task_id, None)
        if values is not None:
            return values
        packed = self._packed.pop(task_id, None)
        return _unpacked_values(packed) if packed is not None else None

    def version_of(self, task_id: str) -> int:
        """The task's last folded version, 0 for an unknown task (a packed
        task is not rebuilt to answer)."""
        values = self._hot.get(task_id)
        if values is not None:
            return int(values["version"])
        packed = self._packed.get(task_id)
        return int(packed[_VERSION]) if packed is not None else 0

    def context(self, task_id: str) -> Context | None:
        """What a message about the task's latest event needs of the task,
        taken now: ``(metadata, task_type, progress)``; None for an unknown
        task. Metadata and task type never change once queued, so the tuple
        stays true of the event however the task goes on."""
        values = self._hot.get(task_id)
        if values is not None:
            return (values["metadata"], values["task_type"], values["progress"])
        packed = self._packed.get(task_id)
        if packed is None:
            return None
        return (packed[_METADATA], packed[_TASK_TYPE], packed[_PROGRESS])

    def is_finished(self, task_id: str) -> bool:
        """True for a known task that reached its end (not rebuilt to answer)."""
        values = self._hot.get(task_id)
        if values is not None:
            return values["status"] in FINISHED
        packed = self._packed.get(task_id)
        return packed is not None and packed[_STATUS] in _FINISHED_VALUES

    def fold(self, event: TaskEvent) -> bool:
        """Fold ``event`` into its task, by :func:`apply`'s rules, in place of
        ``index[task_id] = apply(index.get(task_id), event)``: True when it
        was folded, False when its version was folded already. A
        ``TaskInfo`` read before is never changed.

        Raises:
            ValueError: when the first event of a task is not ``queued``.
        """
        e = event.__dict__
        task_id = e["task_id"]
        values = self._hot.get(task_id)
        if values is None:
            packed = self._packed.get(task_id)
            if packed is not None:
                if e["version"] <= packed[_VERSION]:
                    return False
                del self._packed[task_id]
                values = fold_values(_unpacked_values(packed), e)
            else:
                values = fold_values(None, e)
        else:
            version = e["version"]
            if version <= values["version"]:
                return False
            FOLDS[e["type"]](values, e["at"], e["data"])
            values["version"] = version
        self._place(task_id, values)
        return True

    def fold_next(
        self,
        task_id: str,
        type_: EventType,
        at: dt.datetime,
        data: dict[str, Any],
    ) -> dict[str, Any]:
        """Fold the task's next event, made here from its parts, and return
        the task's field values after it (``["version"]`` is the version
        the event takes, 1 for a new task): :meth:`fold` without a
        ``TaskEvent``, for the journal that writes the event afterwards.
        The dict is the index's own: read it, never change it. Later events
        of the task change it in place (unless the task was packed since),
        but its metadata and task type never change.

        Raises:
            ValueError: when the first event of a task is not ``queued``.
        """
        values = self._hot.get(task_id)
        if values is None:
            packed = self._packed.get(task_id)
            if packed is None:
                if type_ is not _QUEUED:
                    raise missing_first(type_, task_id)
                values = first_values(task_id, 1, at, data)
                if self.pack_pending:
                    self._packed[task_id] = _pack(values)
                else:
                    self._hot[task_id] = values
                return values
            del self._packed[task_id]
            values = _unpacked_values(packed)
        values["version"] += 1
        FOLDS[type_](values, at, data)
        self._place(task_id, values)
        return values

    def _place(self, task_id: str, values: dict[str, Any]) -> None:
        # A task's values after a fold: hot, or packed when pending tasks are
        # packed; a finished task joins the queue of tasks to pack later.
        if self._infos:
            self._infos.pop(task_id, None)
        status = values["status"]
        if status == _PENDING and self.pack_pending:
            self._hot.pop(task_id, None)
            self._packed[task_id] = _pack(values)
            return
        self._hot[task_id] = values
        if status in FINISHED:
            finished = self._finished
            finished.append(task_id)
            if len(finished) > self.hot_limit:
                self._pack_oldest()

    def _put(self, task_id: str, values: dict[str, Any]) -> None:
        # A task's new values, which the index owns from now on.
        self._packed.pop(task_id, None)
        self._place(task_id, values)

    def __setitem__(self, task_id: str, info: TaskInfo) -> None:
        self._packed.pop(task_id, None)
        values = info.__dict__.copy()
        values["status"] = values["status"].value  # as the fold writes it
        if not values["metadata"]:
            values["metadata"] = None
        self._place(task_id, values)
        if task_id in self._hot:
            self._infos[task_id] = info

    def _pack_oldest(self) -> None:
        # An eighth of the hot limit at a time: one call per many tasks.
        finished, hot, packed = self._finished, self._hot, self._packed
        infos = self._infos
        for _ in range(max(1, self.hot_limit // 8, len(finished) - self.hot_limit)):
            if not finished:
                return
            task_id = finished.popleft()
            values = hot.get(task_id)
            if values is not None and values["status"] in FINISHED:
                # A task finished twice (a newer attempt) is still in the
                # deque later; packing it now is harmless, it unpacks equal.
                del hot[task_id]
                if infos:
                    infos.pop(task_id, None)
                packed[task_id] = _pack(values)

    def __delitem__(self, task_id: str) -> None:
        self._infos.pop(task_id, None)
        if self._hot.pop(task_id, None) is None:
            del self._packed[task_id]

    def pop(self, task_id: str, default: TaskInfo | None = None) -> TaskInfo | None:
        """Remove and return the task's info, or ``default``."""
        info = self.get(task_id, default)
        self._infos.pop(task_id, None)
        self._hot.pop(task_id, None)
        self._packed.pop(task_id, None)
        return info

    def values(self) -> Iterator[TaskInfo]:
        """Every task's info (packed ones rebuilt as they are read)."""
        for task_id in list(self._hot):
            info = self.get(task_id)
            if info is not None:
                yield info
        for values in list(self._packed.values()):
            yield _unpack(values)

    def items(self) -> Iterator[tuple[str, TaskInfo]]:
        """``(task_id, info)`` pairs."""
        for task_id in list(self._hot):
            info = self.get(task_id)
            if info is not None:
                yield task_id, info
        for task_id, values in list(self._packed.items()):
            yield task_id, _unpack(values)


class IndexLoader:
    """Folds a replayed log straight into a :class:`TaskInfoIndex`.

    Each task's fields live in one private dict while the task is
    unfinished, changed in place by :func:`fold_values` (no ``TaskEvent`` or
    ``TaskInfo`` per event); a task that finishes is packed at once, so a
    long log costs the memory of its unfinished tasks while it is read.
    Nobody may read the index until :meth:`finish`.
    """

    def __init__(self, index: TaskInfoIndex) -> None:
        self._index = index
        self._active: dict[str, dict[str, Any]] = {}

    def feed(self, e: dict[str, Any]) -> None:
        """Fold one event's fields (``TaskEvent.__dict__``'s keys)."""
        task_id = e["task_id"]
        active = self._active
        values = active.get(task_id)
        if values is None:
            values = self._index._take_values(task_id)
        values = fold_values(values, e)
        if values["status"] in FINISHED:
            active.pop(task_id, None)
            self._index._packed[task_id] = _pack(values)
        else:
            active[task_id] = values

    def finish(self) -> None:
        """Put the unfinished tasks in the index (hot, or packed when
        pending and the index packs pending tasks)."""
        index = self._index
        for task_id, values in self._active.items():
            index._put(task_id, values)
        self._active = {}
