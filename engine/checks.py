"""Checks of what users pass to the worker, each failing with a sentence
that names the offending value (the usage family of engine.exceptions)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from engine.constants import MAX_TASK_ID_LENGTH
from engine.events import encode_payload, is_plain
from engine.exceptions import InvalidTimeoutError, UsageError
from projections.task_info import TaskStatus

__all__ = [
    "ADD_TASK_KEYWORDS",
    "check_age",
    "check_arguments",
    "check_group_id",
    "check_task_id",
    "check_timeout",
    "statuses",
]


#: The keywords add_task keeps for itself; a task function's own parameters
#: cannot use these names through add_task's **kwargs.
ADD_TASK_KEYWORDS = frozenset(
    {
        "priority",
        "task_id",
        "metadata",
        "timeout",
        "use_cache",
        "cache_ttl",
        "cache_key_fn",
    }
)


def check_timeout(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTimeoutError(
            f"The {name} must be a positive number of seconds or None, not {value!r}."
        )
    if not math.isfinite(value) or value <= 0:
        raise InvalidTimeoutError(
            f"The {name} must be a positive number of seconds or None, not {value!r}."
        )
    return float(value)


def check_arguments(
    task_type: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    metadata: dict[str, Any] | None,
) -> None:
    for index, value in enumerate(args):
        if not is_plain(value):
            encode_payload(value, f"Argument {index} of task {task_type!r}")
    for name, value in kwargs.items():
        if not is_plain(value):
            encode_payload(value, f"Argument {name!r} of task {task_type!r}")
    if metadata:
        encode_payload(metadata, f"metadata of task {task_type!r}")


def check_task_id(task_id: str) -> None:
    if len(task_id) > MAX_TASK_ID_LENGTH:
        raise UsageError(
            f"The task_id is {len(task_id):,} characters long; the limit is "
            f"{MAX_TASK_ID_LENGTH}. Use a shorter id, or omit task_id.",
            task_id=task_id[:40],
        )
    if "\x00" in task_id or not _encodable(task_id):
        raise UsageError(
            f"The task_id {task_id!r} holds a NUL character or a lone surrogate, "
            "which no event store can index; use printable text."
        )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def statuses(status: Any) -> frozenset[TaskStatus]:
    if isinstance(status, str | TaskStatus):
        values = [status]
    elif isinstance(status, list | tuple | set | frozenset):
        values = list(status)
    else:
        raise UsageError(
            f"The status must be a TaskStatus, its string or a list of them, "
            f"not {status!r}."
        )
    try:
        return frozenset(TaskStatus(value) for value in values)
    except (ValueError, TypeError):
        known = ", ".join(s.value for s in TaskStatus)
        raise UsageError(
            f"Unknown task status in {status!r}; use one of {known}."
        ) from None


def check_age(older_than: Any, name: str = "older_than") -> None:
    """A task age filter must be a ``datetime.timedelta``."""
    if not isinstance(older_than, dt.timedelta):
        raise UsageError(
            f"The {name} must be a datetime.timedelta, not {older_than!r}."
        )


def check_group_id(metadata: dict[str, Any]) -> None:
    """Events are routed by ``metadata["group_id"]``: a string or an int,
    which every store gives back as one (a dict-like or list-like value
    would come back from the log as a plain dict or list, which cannot be a
    group)."""
    group_id = metadata.get("group_id")
    if group_id is None or isinstance(group_id, str | int):
        return
    raise UsageError(
        f"The metadata's group_id must be a string or an int, not "
        f"{group_id!r}: the task's events are routed by it."
    )
