"""Demonstration task types, registered on import.

``taskengine serve`` loads this module unless told ``--no-examples`` so that
the dashboard has something to run: ``sleep`` (reports progress), ``add``,
``fail`` and ``echo``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from engine.registry import task

__all__ = ["add", "echo", "fail", "sleep"]

ProgressCallback = Callable[[float], None] | None


@task("sleep")
async def sleep(
    seconds: float = 1.0, steps: int = 20, progress_callback: ProgressCallback = None
) -> dict[str, float]:
    """Wait ``seconds`` in ``steps`` equal parts, reporting progress after each."""
    steps = max(1, int(steps))
    for step in range(1, steps + 1):
        await asyncio.sleep(seconds / steps)
        if progress_callback is not None:
            progress_callback(step / steps)
    return {"slept_s": seconds}


@task("add")
async def add(a: float, b: float) -> float:
    """Return ``a + b``."""
    return a + b


@task("fail")
async def fail(message: str = "This task fails on purpose.") -> None:
    """Raise ``RuntimeError(message)``."""
    raise RuntimeError(message)


@task("echo")
async def echo(value: Any = None) -> Any:
    """Return ``value`` unchanged."""
    return value
