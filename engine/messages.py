"""The dicts the worker publishes for each committed event (API.md's
``event_data``), built only when a subscriber or a reader needs them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.events import EventType, TaskEvent
from projections.index import Context
from projections.task_info import STATUS_AFTER, TaskInfo

if TYPE_CHECKING:
    from engine.store.memory import MemoryEventStore

__all__ = [
    "event_message",
    "group_at",
    "group_in",
    "group_of",
    "message_at",
    "message_in",
    "task_message",
]

_TYPE_NAME = {type_: str(type_.value) for type_ in EventType}


def _group(task_id: str, metadata: dict[str, Any] | None) -> str:
    group_id = metadata.get("group_id") if metadata else None
    return group_id if group_id is not None else task_id


def group_of(event: TaskEvent, info: TaskInfo | None) -> str:
    """The group an event is routed to: its task's ``group_id`` metadata,
    else the task id."""
    return _group(event.task_id, info.metadata if info is not None else None)


def event_message(
    event: TaskEvent, info: TaskInfo | None, group_id: str
) -> dict[str, Any]:
    """API.md's ``event_data`` for ``event``; ``info`` is its task's state
    (for the task type, and the progress of an event that carries none)."""
    if info is None:
        return _message(event, None, 0.0, group_id)
    return _message(event, info.task_type, info.progress, group_id)


def _message(
    event: TaskEvent, task_type: str | None, progress_then: float, group_id: str
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
        progress = progress_then
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
        "task_type": task_type,
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


# The worker publishes each event with its task's context taken at publish
# time (projections.index.Context); the message is routed and rendered only
# when a subscriber exists or the recent events are read.


def group_in(event: TaskEvent, context: Context | None) -> str:
    """:func:`group_of`, from the task's context at publish time."""
    return _group(event.task_id, context[0] if context is not None else None)


def message_in(event: TaskEvent, context: Context | None) -> dict[str, Any]:
    """:func:`task_message`, from the task's context at publish time."""
    if context is None:
        return _message(event, None, 0.0, event.task_id)
    metadata, task_type, progress = context
    return _message(event, task_type, progress, _group(event.task_id, metadata))


# An event the memory store holds is published by its position and its
# task's field values (see AsyncTaskWorker._publish_at): the event is read
# back from the store only if the message is rendered.


def group_at(store: MemoryEventStore, position: int, values: dict[str, Any]) -> str:
    """:func:`group_in` of the event the memory store holds at ``position``
    (not read to answer)."""
    return _group(store.task_id_at(position), values["metadata"])


def message_at(
    store: MemoryEventStore, position: int, values: dict[str, Any]
) -> dict[str, Any]:
    """:func:`message_in` of the event the memory store holds at ``position``."""
    event = store.event_at(position)
    return _message(
        event,
        values["task_type"],
        values["progress"],
        _group(event.task_id, values["metadata"]),
    )
