"""The dicts the worker publishes for each committed event (API.md's
``event_data``), built only when a subscriber or a reader needs them."""

from __future__ import annotations

from typing import Any

from engine.events import EventType, TaskEvent
from projections.index import info_of
from projections.task_info import STATUS_AFTER, TaskInfo

Snapshot = TaskInfo | tuple[Any, ...] | None

__all__ = ["event_message", "group_in", "group_of", "message_in", "task_message"]

_TYPE_NAME = {type_: str(type_.value) for type_ in EventType}


def group_of(event: TaskEvent, info: TaskInfo | None) -> str:
    metadata = info.metadata if info is not None else None
    group_id = metadata.get("group_id") if metadata else None
    return group_id if group_id is not None else event.task_id


def event_message(
    event: TaskEvent, info: TaskInfo | None, group_id: str
) -> dict[str, Any]:
    type_ = event.type
    data = event.data
    if type_ is EventType.PROGRESS:
        progress = data["progress"]
    elif type_ is EventType.COMPLETED:
        progress = 1.0
    elif type_ is EventType.QUEUED or type_ is EventType.STARTED:
        progress = 0.0
    else:
        progress = info.progress if info is not None else 0.0
    message: dict[str, Any] = {
        "event_id": f"{event.task_id}:{event.version}",
        "position": event.position,
        "task_id": event.task_id,
        "version": event.version,
        "type": _TYPE_NAME[type_],
        "status": STATUS_AFTER[type_],
        "progress": progress,
        "at": event.at.isoformat(),
        "group_id": group_id,
        "task_type": info.task_type if info is not None else None,
    }
    if type_ is EventType.COMPLETED:
        message["result"] = data.get("result")
        message["from_cache"] = data.get("from_cache", False)
    elif "error" in data:
        message["error"] = data["error"]
        message["error_type"] = data.get("error_type")
    return message


def task_message(event: TaskEvent, info: TaskInfo | None) -> dict[str, Any]:
    """:func:`event_message` with the task's own group id."""
    return event_message(event, info, group_of(event, info))


# The worker publishes a snapshot of the task's state taken at publish time
# (projections.index: the task's TaskInfo, or its packed values), turned into
# a TaskInfo only when the message is routed or rendered, which is only when
# a subscriber exists or the recent events are read.


def group_in(event: TaskEvent, snapshot: Snapshot) -> str:
    """:func:`group_of`, the task's info taken from a projection snapshot."""
    return group_of(event, info_of(snapshot))


def message_in(event: TaskEvent, snapshot: Snapshot) -> dict[str, Any]:
    """:func:`task_message`, the task's info taken from a projection snapshot."""
    return task_message(event, info_of(snapshot))
