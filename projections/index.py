"""Where a process keeps its ``TaskInfo`` projection: a mapping of task id to
``TaskInfo`` that stores long-finished tasks packed.

Unfinished tasks and the last ``hot_limit`` finished ones stay as
``TaskInfo`` objects; older finished tasks are kept as a tuple of their field
values (about a third of the size) and rebuilt when read. A worker that keeps
a week of finished tasks in memory pays for their values, not for a model
object each. With ``pack_pending``, pending tasks are packed too: a cluster
node may hold many tasks queued in the log for any node, and a packed task is
a tuple the garbage collector stops walking. Imports only engine.events and
the fold module.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from engine.events import TaskEvent
from projections.task_info import (
    FINISHED,
    TaskInfo,
    TaskStatus,
    build_info,
    fold_values,
    next_values,
)

__all__ = ["IndexLoader", "TaskInfoIndex", "info_of"]

_FIELDS = tuple(TaskInfo.model_fields)


_STATUS = _FIELDS.index("status")
_METADATA = _FIELDS.index("metadata")
_VERSION = _FIELDS.index("version")
_STATUSES = {status.value: status for status in TaskStatus}
_FINISHED_VALUES = frozenset(status.value for status in FINISHED)


def _pack(values: dict[str, Any]) -> tuple[Any, ...]:
    # A task's field values (in field order) with the status as its string
    # and empty metadata as None: a tuple of atomic values only, which the
    # garbage collector stops tracking, so a large projection does not slow
    # every full collection down.
    packed = list(values.values())
    packed[_STATUS] = packed[_STATUS].value
    if not packed[_METADATA]:
        packed[_METADATA] = None
    return tuple(packed)


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
        "status": _STATUSES[status],
        "created_at": created_at,
        "started_at": started_at,
        "completed_at": completed_at,
        "result": result,
        "error": error,
        "progress": progress,
        "metadata": metadata if metadata is not None else {},
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


def info_of(snapshot: TaskInfo | tuple[Any, ...] | None) -> TaskInfo | None:
    """The ``TaskInfo`` of a :meth:`TaskInfoIndex.snapshot`."""
    if snapshot is None or type(snapshot) is not tuple:
        return snapshot  # type: ignore[return-value]
    return _unpack(snapshot)


class TaskInfoIndex:
    """A dict-like map of task id to :class:`TaskInfo` (see the module doc)."""

    __slots__ = ("_hot", "_packed", "_finished", "hot_limit", "pack_pending")

    def __init__(self, hot_limit: int = 4096, *, pack_pending: bool = False) -> None:
        self._hot: dict[str, TaskInfo] = {}
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
        info = self._hot.get(task_id)
        if info is not None:
            return info
        packed = self._packed.get(task_id)
        return _unpack(packed) if packed is not None else default

    def _take_values(self, task_id: str) -> dict[str, Any] | None:
        # A task's field values for IndexLoader, removed from the index.
        info = self._hot.pop(task_id, None)
        if info is not None:
            return info.__dict__.copy()
        packed = self._packed.pop(task_id, None)
        return _unpacked_values(packed) if packed is not None else None

    def version_of(self, task_id: str) -> int:
        """The task's last folded version, 0 for an unknown task (a packed
        task is not rebuilt to answer)."""
        info = self._hot.get(task_id)
        if info is not None:
            return int(info.__dict__["version"])
        packed = self._packed.get(task_id)
        return int(packed[_VERSION]) if packed is not None else 0

    def snapshot(self, task_id: str) -> TaskInfo | tuple[Any, ...] | None:
        """The task's current state as it is kept: its ``TaskInfo``, or its
        packed values; both immutable, so a caller may keep either as a
        record of this moment and build the ``TaskInfo`` only if it needs
        it (:func:`info_of`). None for an unknown task."""
        info = self._hot.get(task_id)
        return info if info is not None else self._packed.get(task_id)

    def is_finished(self, task_id: str) -> bool:
        """True for a known task that reached its end (not rebuilt to answer)."""
        info = self._hot.get(task_id)
        if info is not None:
            return info.__dict__["status"] in FINISHED
        packed = self._packed.get(task_id)
        return packed is not None and packed[_STATUS] in _FINISHED_VALUES

    def fold(self, event: TaskEvent) -> bool:
        """Fold ``event`` into its task, by :func:`apply`'s rules, in place of
        ``index[task_id] = apply(index.get(task_id), event)``: True when it
        was folded, False when its version was folded already. The previous
        ``TaskInfo`` is never changed; a packed task is folded from its
        values without building the ``TaskInfo`` it had.

        Raises:
            ValueError: when the first event of a task is not ``queued``.
        """
        e = event.__dict__
        task_id = e["task_id"]
        info = self._hot.get(task_id)
        if info is not None:
            values = next_values(info.__dict__, e)
            if values is None:
                return False
        else:
            packed = self._packed.get(task_id)
            if packed is not None:
                if e["version"] <= packed[_VERSION]:
                    return False
                del self._packed[task_id]
            values = fold_values(
                _unpacked_values(packed) if packed is not None else None, e
            )
        status = values["status"]
        if status is TaskStatus.PENDING and self.pack_pending:
            self._hot.pop(task_id, None)
            self._packed[task_id] = _pack(values)
            return True
        self._hot[task_id] = build_info(values)
        if status in FINISHED:
            finished = self._finished
            finished.append(task_id)
            if len(finished) > self.hot_limit:
                self._pack_oldest()
        return True

    def _put(self, task_id: str, values: dict[str, Any]) -> None:
        # A task's new values, which the index owns from now on.
        if self.pack_pending and values["status"] is TaskStatus.PENDING:
            self._hot.pop(task_id, None)
            self._packed[task_id] = _pack(values)
        else:
            self[task_id] = build_info(values)

    def __setitem__(self, task_id: str, info: TaskInfo) -> None:
        if self._packed and task_id in self._packed:
            del self._packed[task_id]
        self._hot[task_id] = info
        if info.__dict__["status"] in FINISHED:
            finished = self._finished
            finished.append(task_id)
            if len(finished) > self.hot_limit:
                self._pack_oldest()

    def _pack_oldest(self) -> None:
        # An eighth of the hot limit at a time: one call per many tasks.
        finished, hot, packed = self._finished, self._hot, self._packed
        for _ in range(max(1, self.hot_limit // 8, len(finished) - self.hot_limit)):
            if not finished:
                return
            task_id = finished.popleft()
            info = hot.get(task_id)
            if info is not None and info.__dict__["status"] in FINISHED:
                # A task finished twice (a newer attempt) is still in the
                # deque later; packing it now is harmless, it unpacks equal.
                del hot[task_id]
                packed[task_id] = _pack(info.__dict__)

    def __delitem__(self, task_id: str) -> None:
        if self._hot.pop(task_id, None) is None:
            del self._packed[task_id]

    def pop(self, task_id: str, default: TaskInfo | None = None) -> TaskInfo | None:
        """Remove and return the task's info, or ``default``."""
        info = self.get(task_id, default)
        self._hot.pop(task_id, None)
        self._packed.pop(task_id, None)
        return info

    def values(self) -> Iterator[TaskInfo]:
        """Every task's info (packed ones rebuilt as they are read)."""
        yield from list(self._hot.values())
        for values in list(self._packed.values()):
            yield _unpack(values)

    def items(self) -> Iterator[tuple[str, TaskInfo]]:
        """``(task_id, info)`` pairs."""
        yield from list(self._hot.items())
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
        """Put the unfinished tasks in the index (as ``TaskInfo`` objects, or
        packed when pending and the index packs pending tasks)."""
        index = self._index
        for task_id, values in self._active.items():
            index._put(task_id, values)
        self._active = {}
