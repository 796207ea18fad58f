"""The task registry: task types (names) mapped to task functions.

Registration is process-wide, as in ``async-task-worker``: ``@task("name")``
registers at import time so that a worker restarted from the log can find
the function of every task type it has to resume.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from engine.exceptions import NotAsyncTaskError, UnknownTaskTypeError, UsageError

__all__ = [
    "get_all_task_types",
    "get_task_function",
    "register_task",
    "resolve_task",
    "task",
    "task_type_of",
]

TaskFunction = Callable[..., Any]
F = TypeVar("F", bound=TaskFunction)

_registry: dict[str, TaskFunction] = {}
_type_attr = "__taskengine_type__"
# Functions passed to add_task directly, by their qualified name, so a task
# queued with a function object can still be resumed in this process.
_seen: dict[str, TaskFunction] = {}
# Function -> task type, so add_task does not inspect a function twice.
_resolved: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _require_async(task_type: str, func: Any) -> None:
    if not callable(func):
        raise NotAsyncTaskError(
            f"Task type {task_type!r} must map to an async function, not {func!r}."
        )
    if not inspect.iscoroutinefunction(func):
        raise NotAsyncTaskError(
            f"Task function {_qualified_name(func)!r} is not a coroutine "
            "function; define it with 'async def'."
        )


def register_task(task_type: str, func: TaskFunction) -> TaskFunction:
    """Register ``func`` under ``task_type`` and return it.

    Registering the same name again replaces the earlier function.

    Raises:
        NotAsyncTaskError: ``func`` is not an ``async def`` function.
        UsageError: ``task_type`` is not a non-empty string.
    """
    if not isinstance(task_type, str) or not task_type:
        raise UsageError(f"A task type must be a non-empty string, not {task_type!r}.")
    _require_async(task_type, func)
    _registry[task_type] = func
    _forget_resolved()
    try:
        setattr(func, _type_attr, task_type)
    except (AttributeError, TypeError):
        pass
    return func


def task(task_type: str) -> Callable[[F], F]:
    """Decorator registering an async function as ``task_type``."""

    def decorate(func: F) -> F:
        register_task(task_type, func)
        return func

    return decorate


def get_task_function(task_type: str) -> TaskFunction | None:
    """The function registered as ``task_type``, or None."""
    return _registry.get(task_type)


def get_all_task_types() -> list[str]:
    """Every registered task type, sorted."""
    return sorted(_registry)


def unregister_task(task_type: str) -> bool:
    """Remove ``task_type``; True when it was registered."""
    _forget_resolved()
    return _registry.pop(task_type, None) is not None


def _forget_resolved() -> None:
    global _last_resolved
    _resolved.clear()
    _last_resolved = (None, "")


def _qualified_name(func: Any) -> str:
    module = getattr(func, "__module__", None) or "?"
    name = getattr(func, "__qualname__", None) or type(func).__name__
    return f"{module}.{name}"


def task_type_of(func: TaskFunction) -> str:
    """The task type a function runs as: its registered name, else its
    qualified name (remembered for this process)."""
    name = getattr(func, _type_attr, None)
    if name is not None and _registry.get(name) is func:
        return name
    name = _qualified_name(func)
    _seen[name] = func
    return name


# The last function resolved, checked by identity before the weak mapping.
_last_resolved: tuple[object, str] = (None, "")


def resolve_task(task_func: TaskFunction | str) -> tuple[str, TaskFunction]:
    """``(task_type, function)`` for a function or a task type name.

    Raises:
        UnknownTaskTypeError: a name that is not registered.
        NotAsyncTaskError: a function that is not ``async def``.
    """
    if isinstance(task_func, str):
        func = _registry.get(task_func) or _seen.get(task_func)
        if func is None:
            known = ", ".join(repr(t) for t in get_all_task_types()) or "none"
            raise UnknownTaskTypeError(
                f"No task function is registered as {task_func!r} "
                f"(registered: {known}); register it with @task({task_func!r}).",
                task_type=task_func,
            )
        return task_func, func
    global _last_resolved
    last = _last_resolved
    if last[0] is task_func:  # the same function as last time, typically
        return last[1], task_func
    try:
        task_type = _resolved[task_func]
    except (KeyError, TypeError):
        _require_async(_qualified_name(task_func), task_func)
        task_type = task_type_of(task_func)
        try:
            _resolved[task_func] = task_type
        except TypeError:
            pass  # not weak-referenceable: resolved again next time
    _last_resolved = (task_func, task_type)
    return task_type, task_func


def find_task(task_type: str) -> TaskFunction | None:
    """The function to resume ``task_type`` with, if this process has one."""
    return _registry.get(task_type) or _seen.get(task_type)
