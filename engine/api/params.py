"""Check the ``params`` of ``POST /tasks`` against the task function.

A parameter the function does not take, one it cannot take by name, one it
needs but did not get, or one that would collide with ``add_task``'s own
keywords is answered with 422 naming the parameter, before anything is
queued, instead of a task that fails later with a ``TypeError``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from engine.api.errors import api_error
from engine.checks import ADD_TASK_KEYWORDS

__all__ = ["RESERVED_PARAMS", "check_params"]

RESERVED_PARAMS = ADD_TASK_KEYWORDS | {"progress_callback"}
_BY_NAME = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _invalid(task_type: str, name: str, message: str) -> Exception:
    return api_error(
        422, message, "invalid_params", task_type=task_type, parameter=name
    )


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def check_params(
    task_type: str, func: Callable[..., Any], params: Mapping[str, Any]
) -> None:
    """Raise a 422 :class:`HTTPException` for the first unacceptable param."""
    for name in params:
        if name in RESERVED_PARAMS:
            raise _invalid(
                task_type,
                name,
                f"Parameter {name!r} is reserved by the task engine and cannot be "
                f"passed in 'params' of task type {task_type!r}; set it as a "
                "top-level field of the request if it is one.",
            )
    signature = _signature(func)
    if signature is None:
        return
    accepted = signature.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    for name in params:
        parameter = accepted.get(name)
        if parameter is None and not takes_any:
            known = [n for n, p in accepted.items() if _settable(n, p)]
            raise _invalid(
                task_type,
                name,
                f"Task type {task_type!r} does not accept parameter {name!r}; "
                f"it accepts {', '.join(map(repr, known)) or 'no parameters'}.",
            )
        if parameter is not None and parameter.kind not in _BY_NAME:
            raise _invalid(
                task_type,
                name,
                f"Parameter {name!r} of task type {task_type!r} cannot be passed "
                "by name.",
            )
    for name, parameter in accepted.items():
        if parameter.kind is parameter.POSITIONAL_ONLY and _no_default(parameter):
            raise _invalid(
                task_type,
                name,
                f"Task type {task_type!r} needs positional-only parameter "
                f"{name!r}, which a request cannot pass by name.",
            )
        if _required(name, parameter) and name not in params:
            raise _invalid(
                task_type,
                name,
                f"Task type {task_type!r} requires parameter {name!r}; add it to "
                "'params'.",
            )


def _settable(name: str, parameter: inspect.Parameter) -> bool:
    return parameter.kind in _BY_NAME and name not in RESERVED_PARAMS


def _no_default(parameter: inspect.Parameter) -> bool:
    return parameter.default is inspect.Parameter.empty


def _required(name: str, parameter: inspect.Parameter) -> bool:
    return _settable(name, parameter) and _no_default(parameter)
