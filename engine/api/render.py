"""Turn tasks and events into JSON the API can always send.

Task results and event payloads are whatever task functions returned. A
value JSON lacks is written in the log's own tagged form
(:func:`engine.events.encode_payload`); a value even that codec refuses is
sent as ``{"$repr": "..."}``, cut to a fixed length. A response is never a
500 because of a task's result.
"""

from __future__ import annotations

from typing import Any

from engine.events import EventType, TaskEvent, encode_payload
from engine.messages import event_message
from projections.task_info import STATUS_AFTER, TaskInfo

__all__ = [
    "event_body",
    "json_safe",
    "log_message",
    "normalise_live",
    "task_body",
    "text",
]

REPR_LIMIT = 250
_MAX_DEPTH = 32
_FIXED_PROGRESS = {"queued": 0.0, "started": 0.0, "completed": 1.0}
_STATUS_OF = STATUS_AFTER


def text(value: str) -> str:
    """``value`` with anything UTF-8 cannot carry (lone surrogates) escaped."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _short_repr(value: Any) -> str:
    try:
        rendered = repr(value)
    except Exception:  # noqa: BLE001 - any __repr__ may fail
        rendered = f"<{type(value).__name__} object>"
    if len(rendered) > REPR_LIMIT:
        rendered = rendered[: REPR_LIMIT - 3] + "..."
    return text(rendered)


def json_safe(value: Any, _depth: int = 0) -> Any:
    """JSON-compatible data for ``value``, whatever it is."""
    if value is None or type(value) in (str, int, bool):
        return value if type(value) is not str or value.isascii() else text(value)
    try:
        return encode_payload(value)
    except Exception:  # noqa: BLE001 - the codec refuses; fall back per part
        pass
    if _depth >= _MAX_DEPTH:
        return {"$repr": _short_repr(value)}
    if isinstance(value, dict):
        return {_key(key): json_safe(item, _depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item, _depth + 1) for item in value]
    return {"$repr": _short_repr(value)}


def _key(key: Any) -> str:
    return text(key) if isinstance(key, str) else _short_repr(key)


def _time(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def task_body(info: TaskInfo) -> dict[str, Any]:
    """The API's representation of a task."""
    d = info.__dict__
    result = d["result"]
    error = d["error"]
    return {
        "id": d["id"],
        "status": d["status"].value,
        "progress": d["progress"],
        "metadata": json_safe(d["metadata"]) if d["metadata"] else {},
        "result": result if result is None else json_safe(result),
        "error": error if error is None else text(error),
        "from_cache": d["from_cache"],
        "task_type": d["task_type"],
        "created_at": _time(d["created_at"]),
        "started_at": _time(d["started_at"]),
        "completed_at": _time(d["completed_at"]),
        "priority": d["priority"],
        "attempt": d["attempt"],
        "error_type": d["error_type"],
        "version": d["version"],
    }


def event_body(event: TaskEvent) -> dict[str, Any]:
    """One event of the log as stored: position, version, type, time, data."""
    return {
        "position": event.position,
        "task_id": event.task_id,
        "version": event.version,
        "type": event.type.value,
        "at": event.at.isoformat(),
        "data": json_safe(event.data),
    }


def group_of(event: TaskEvent, info: TaskInfo | None) -> str:
    """The group a task's events are published under (as the worker does)."""
    metadata = info.metadata if info is not None else None
    if metadata is None and event.type is EventType.QUEUED:
        metadata = event.data.get("metadata")
    return (metadata or {}).get("group_id") or event.task_id


def log_message(
    event: TaskEvent, info: TaskInfo | None, progress: float
) -> dict[str, Any]:
    """The live message the worker published for ``event``, rebuilt from
    the log so that a resumed stream reads exactly like a live one.

    Args:
        event: The event as read from the store.
        info: The task's current state in the projection, if known.
        progress: The task's progress as of this event.
    """
    message = event_message(event, info, group_of(event, info))
    if message["task_type"] is None and event.type is EventType.QUEUED:
        message["task_type"] = event.data.get("task_type")
    message["progress"] = progress
    return message


def progress_at(event: TaskEvent, info: TaskInfo | None, seen: float | None) -> float:
    """A task's progress as of ``event``.

    ``seen`` is the last progress this reader saw for the task in the log,
    if any. A failed or cancelled task keeps the progress it had; its final
    state in the projection says what that was.
    """
    type_ = event.type
    if type_ is EventType.PROGRESS:
        return float(event.data["progress"])
    fixed = _FIXED_PROGRESS.get(type_.value)
    if fixed is not None:
        return fixed
    if seen is not None:
        return seen
    return info.progress if info is not None else 0.0


def normalise_live(message: dict[str, Any]) -> dict[str, Any]:
    """A published message with the progress :func:`progress_at` gives.

    The worker publishes a committed batch with the projection as of the
    batch's end, so a ``started`` event committed together with later
    progress would otherwise carry that later progress.
    """
    fixed = _FIXED_PROGRESS.get(message.get("type"))  # type: ignore[arg-type]
    if fixed is None or message.get("progress") == fixed:
        return message
    return {**message, "progress": fixed}
