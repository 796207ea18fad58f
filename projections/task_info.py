"""The ``TaskInfo`` read model and the pure fold that builds it from events.

``apply(info, event)`` never mutates: it returns a new :class:`TaskInfo`.
This module imports only :mod:`engine.events` (DESIGN.md's dependency rule).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.events import EventType, TaskEvent, copied_fields

__all__ = [
    "FOLDS",
    "STATUS_AFTER",
    "TaskInfo",
    "TaskStatus",
    "apply",
    "build_info",
    "first_values",
    "fold",
    "fold_values",
    "missing_first",
    "next_values",
]


class TaskStatus(enum.StrEnum):
    """Where a task stands; the values are the strings users compare with."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: The status a task has right after an event of each type, as plain strings
#: (for messages and reports; enum attribute access is slow on hot paths).
STATUS_AFTER: dict[EventType, str] = {
    EventType.QUEUED: "pending",
    EventType.STARTED: "running",
    EventType.PROGRESS: "running",
    EventType.COMPLETED: "completed",
    EventType.FAILED: "failed",
    EventType.CANCELLED: "cancelled",
}

FINISHED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})

# The statuses as the fold writes them into field values: plain strings, so
# a task's values hold no object the garbage collector has to follow (a dict
# of atomic values is untracked). A TaskInfo gets the TaskStatus member.
_STATUS_MEMBERS: dict[str, TaskStatus] = {status.value: status for status in TaskStatus}
PENDING = TaskStatus.PENDING.value
_RUNNING = TaskStatus.RUNNING.value
_COMPLETED = TaskStatus.COMPLETED.value
_FAILED = TaskStatus.FAILED.value
_CANCELLED = TaskStatus.CANCELLED.value


class TaskInfo(BaseModel):
    """What is known of one task, folded from its events.

    Times are timezone-aware UTC. ``version`` is the last event folded in.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    status: TaskStatus
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    result: Any = None
    error: str | None = None
    progress: float = 0.0
    metadata: dict[str, Any] = {}
    from_cache: bool = False
    task_type: str | None = None
    priority: int = 0
    attempt: int = 1
    error_type: str | None = None
    version: int = 0

    @property
    def finished(self) -> bool:
        """True once the task reached completed, failed or cancelled."""
        return self.status in FINISHED

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> TaskInfo:
        """A copy, with ``update`` applied (unvalidated, as pydantic's own)."""
        return _build(copied_fields(self, update, deep))


# Every field counts as set, and all instances share one set object: a fold
# produces many TaskInfo copies, and a per-instance set would triple their
# resident size.
_ALL_FIELDS = frozenset(TaskInfo.model_fields)
_set_attr = object.__setattr__


def _build(values: dict[str, Any]) -> TaskInfo:
    # The fold writes statuses as strings (see PENDING); a TaskInfo holds
    # the TaskStatus member.
    values["status"] = _STATUS_MEMBERS[values["status"]]
    info = TaskInfo.__new__(TaskInfo)
    _set_attr(info, "__dict__", values)
    _set_attr(info, "__pydantic_fields_set__", _ALL_FIELDS)
    _set_attr(info, "__pydantic_extra__", None)
    _set_attr(info, "__pydantic_private__", None)
    return info


def build_info(values: dict[str, Any]) -> TaskInfo:
    """A :class:`TaskInfo` from trusted field values, without validation; it
    owns ``values`` from now on. The status may be its string (as the fold
    writes it); metadata None (as :func:`first_values` gives for a task
    queued without any) becomes a new empty dict."""
    if values["metadata"] is None:
        values["metadata"] = {}
    return _build(values)


# Fields are read through ``__dict__``: a pydantic model's attribute access
# goes through its ``__getattr__`` hook, a visible cost on this hot path.


def _first(e: dict[str, Any]) -> TaskInfo:
    return build_info(first_values(e["task_id"], e["version"], e["at"], e["data"]))


def first_values(
    task_id: str, version: int, at: dt.datetime, data: dict[str, Any]
) -> dict[str, Any]:
    """A task's field values after its first (``queued``) event (metadata
    None when it has none: see :func:`build_info`)."""
    return {
        "id": task_id,
        "status": PENDING,
        "created_at": at,
        "started_at": None,
        "completed_at": None,
        "result": None,
        "error": None,
        "progress": 0.0,
        # None for no metadata: build_info() gives each TaskInfo its own
        # empty dict, so a caller changing one task's metadata never changes
        # another's, and a task without metadata costs no dict until read.
        "metadata": data.get("metadata") or None,
        "from_cache": False,
        "task_type": data.get("task_type"),
        "priority": data.get("priority", 0),
        "attempt": data.get("attempt", 1),
        "error_type": None,
        "version": version,
    }


def missing_first(type_: EventType, task_id: str) -> ValueError:
    """The error of a task whose first event is not ``queued``."""
    return ValueError(
        f"Event {type_.value!r} of task {task_id!r} arrived "
        "before its 'queued' event; the log is missing its first event."
    )


def fold_values(values: dict[str, Any] | None, e: dict[str, Any]) -> dict[str, Any]:
    """:func:`apply` for a replay, on one task's field values in place.

    ``e`` holds an event's fields (``task_id, version, type, at, data``, as
    ``TaskEvent.__dict__`` does); ``values`` is a dict of the task's fields
    that the caller owns and shows nobody until the replay ends (None before
    the task's first event). It is changed in place and returned: no
    ``TaskEvent`` or ``TaskInfo`` is built per event. The same folds and
    version rule as :func:`apply`; ``build_info(values)`` gives the task's
    ``TaskInfo``.

    Raises:
        ValueError: when the first event of a task is not ``queued``.
    """
    if values is None:
        if e["type"] is EventType.QUEUED:
            return first_values(e["task_id"], e["version"], e["at"], e["data"])
        raise missing_first(e["type"], e["task_id"])
    version = e["version"]
    if version > values["version"]:
        FOLDS[e["type"]](values, e["at"], e["data"])
        values["version"] = version
    return values


# Each fold below sets the fields an event of its type changes on ``values``,
# a dict its caller owns (apply() passes a fresh copy of the previous state's
# values, so its inputs are never mutated), from the event's time and data.


def _queued(values: dict[str, Any], at: dt.datetime, data: dict[str, Any]) -> None:
    # A new attempt of a known task: it is pending again.
    values["status"] = PENDING
    values["started_at"] = None
    values["completed_at"] = None
    values["error"] = None
    values["error_type"] = None
    values["progress"] = 0.0
    values["attempt"] = data.get("attempt", values["attempt"] + 1)


def _started(values: dict[str, Any], at: dt.datetime, data: dict[str, Any]) -> None:
    values["status"] = _RUNNING
    values["started_at"] = at
    attempt = data.get("attempt")
    if attempt is not None:
        values["attempt"] = attempt


def _progress(values: dict[str, Any], at: dt.datetime, data: dict[str, Any]) -> None:
    values["progress"] = data["progress"]


def _completed(values: dict[str, Any], at: dt.datetime, data: dict[str, Any]) -> None:
    values["status"] = _COMPLETED
    values["completed_at"] = at
    values["result"] = data.get("result")
    values["progress"] = 1.0
    values["from_cache"] = data.get("from_cache", False)


def _failed(values: dict[str, Any], at: dt.datetime, data: dict[str, Any]) -> None:
    values["status"] = _FAILED
    values["completed_at"] = at
    values["error"] = data.get("error")
    values["error_type"] = data.get("error_type")


def _cancelled(values: dict[str, Any], at: dt.datetime, data: dict[str, Any]) -> None:
    values["status"] = _CANCELLED
    values["completed_at"] = at
    values["error"] = data.get("error", "cancelled")
    values["error_type"] = data.get("error_type", "CancelledError")


#: The fold step of each event type: ``FOLDS[type](values, at, data)``.
FoldStep = Callable[[dict[str, Any], dt.datetime, dict[str, Any]], None]
FOLDS: dict[EventType, FoldStep] = {
    EventType.QUEUED: _queued,
    EventType.STARTED: _started,
    EventType.PROGRESS: _progress,
    EventType.COMPLETED: _completed,
    EventType.FAILED: _failed,
    EventType.CANCELLED: _cancelled,
}


def apply(info: TaskInfo | None, event: TaskEvent) -> TaskInfo:
    """Fold one event into ``info`` and return the new state.

    ``info`` is ``None`` before a task's first event. An event whose version is
    not the next one of the task is ignored (it was folded already), so the
    fold is idempotent under redelivery.

    Raises:
        ValueError: when the first event of a task is not ``queued``.
    """
    e = event.__dict__
    if info is None:
        if e["type"] is EventType.QUEUED:
            return _first(e)
        raise missing_first(e["type"], e["task_id"])
    values = next_values(info.__dict__, e)
    return info if values is None else _build(values)


def next_values(before: dict[str, Any], e: dict[str, Any]) -> dict[str, Any] | None:
    """A task's field values after the event whose fields are ``e``, as a
    fresh dict (``before`` is not changed); None when the event's version
    was folded already. The step :func:`apply` takes on a known task."""
    version = e["version"]
    if version <= before["version"]:
        return None
    values = before.copy()
    FOLDS[e["type"]](values, e["at"], e["data"])
    values["version"] = version
    return values


def fold(events: list[TaskEvent] | tuple[TaskEvent, ...]) -> dict[str, TaskInfo]:
    """Fold a sequence of events (in log order) into one TaskInfo per task."""
    infos: dict[str, TaskInfo] = {}
    for event in events:
        infos[event.task_id] = apply(infos.get(event.task_id), event)
    return infos
