"""Rows of the PostgreSQL log: events to the ``unnest()`` columns of an
append, and rows of a read or a claim back to events. This module may import
:mod:`engine.events` and :mod:`engine.exceptions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from engine.events import (
    EventType,
    TaskEvent,
    encode_payload,
    is_plain,
    json_text,
    parse_payload,
)
from engine.exceptions import PayloadEncodingError
from engine.store.base import collector_paused

__all__ = [
    "MAX_TASK_ID_LENGTH",
    "claimed_pairs",
    "event_columns",
    "events_of_rows",
    "fields_of_rows",
]

#: Longest task id the PostgreSQL log accepts. The unique index on
#: ``(task_id, version)`` refuses entries over 2,704 bytes, and four bytes
#: per character is the UTF-8 worst case.
MAX_TASK_ID_LENGTH = 512

_TYPES = {member.value: member for member in EventType}
_TAG_MARK = '"$te"'
_dumps = json_text


def event_columns(events: Sequence[TaskEvent]) -> tuple[list[Any], ...]:
    """The five ``unnest()`` arrays of an append.

    Raises:
        PayloadEncodingError: a task id or a payload cannot be stored.
    """
    task_ids, versions, types, ats, datas = [], [], [], [], []
    for event in events:
        fields = event.__dict__
        task_id = fields["task_id"]
        _check_task_id(task_id)
        task_ids.append(task_id)
        versions.append(fields["version"])
        types.append(fields["type"].value)
        ats.append(fields["at"])
        data = fields["data"]
        # Most payloads are plain JSON already: no copy through the codec.
        text = _plain_text(data) if is_plain(data) else None
        datas.append(text if text is not None else _encoded(data))
    return task_ids, versions, types, ats, datas


def _plain_text(data: dict[str, Any]) -> str | None:
    # orjson writes plain data about ten times faster than json; jsonb
    # stores the same values either way. It refuses integers beyond 64 bits.
    try:
        return orjson.dumps(data).decode()
    except orjson.JSONEncodeError:
        return None


def _encoded(data: dict[str, Any]) -> str:
    return _dumps(encode_payload(data, "event data"))


def _check_task_id(value: str) -> None:
    if len(value) > MAX_TASK_ID_LENGTH:
        raise PayloadEncodingError(
            f"The task id {value[:40]!r}... is {len(value):,} characters "
            f"long; the PostgreSQL log accepts at most {MAX_TASK_ID_LENGTH}.",
            path="task_id",
        )
    if "\x00" in value:
        problem = "contains a NUL character"
    elif value.isascii():
        return
    else:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            problem = "contains a lone surrogate"
        else:
            return
    raise PayloadEncodingError(
        f"The task id {value[:80]!r} {problem}, which PostgreSQL text cannot "
        "store; use printable text.",
        path="task_id",
    )


def events_of_rows(
    rows: Sequence[Any], held: dict[int, TaskEvent] | None = None
) -> list[TaskEvent]:
    """Events of rows ``(position, task_id, version, type, at, data)``.

    ``held`` maps positions to events this process wrote: those are taken
    from it (their position filled in) instead of decoded.
    """
    build, types = TaskEvent.build, _TYPES
    events = []
    with collector_paused(len(rows)):
        for position, task_id, version, type_, at, raw in rows:
            if held:
                event = held.pop(position, None)
                if event is not None:
                    if event.__dict__["position"] is None:
                        event.__dict__["position"] = position  # not sealed yet
                    events.append(event)
                    continue
            data = parse_payload(raw)
            events.append(build(position, task_id, version, types[type_], at, data))
    return events


def fields_of_rows(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Each row as a dict of the event's fields (``TaskEvent.__dict__``'s
    keys), without building the event. (jsonb prints the codec's tag key
    verbatim, as the SQLite store does, so payloads parse the same way.)"""
    types = _TYPES
    with collector_paused(len(rows)):
        return [
            {
                "position": position,
                "task_id": task_id,
                "version": version,
                "type": types[type_],
                "at": at,
                "data": parse_payload(raw),
            }
            for position, task_id, version, type_, at, raw in rows
        ]


def claimed_pairs(
    rows: Sequence[Any], node_id: str
) -> list[tuple[TaskEvent, TaskEvent]]:
    """``(queued, started)`` pairs of the rows of a claim (the started
    event's columns, then the queued event's, then the NOTIFY). The
    ``started`` payload is known (attempt and node), so it is built, not
    parsed."""
    build, queued, started = TaskEvent.build, EventType.QUEUED, EventType.STARTED
    pairs = []
    for row in rows:
        position, task_id, version, at, attempt = row[:5]
        q_position, q_version, q_at, raw = row[5:9]
        data = {"attempt": attempt, "node_id": node_id}
        pairs.append(
            (
                build(q_position, task_id, q_version, queued, q_at, parse_payload(raw)),
                build(position, task_id, version, started, at, data),
            )
        )
    return pairs
