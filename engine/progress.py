"""Progress reporting: the callable handed to task functions, throttled so a
chatty task cannot flood the log.

A value is written when it moved by at least ``min_delta`` and at least
``min_interval_s`` passed since the last write; 1.0 is always written. A value
held back is written by a trailing timer, or before the task's end when it
ends first, so the log ends on the last value a task reported.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable

__all__ = ["ProgressReporter"]

logger = logging.getLogger(__name__)


class ProgressReporter:
    """The ``progress_callback`` of one run of a task."""

    __slots__ = (
        "_emit",
        "_last_value",
        "_last_at_s",
        "_held",
        "_timer",
        "_closed",
        "min_interval_s",
        "min_delta",
        "task_id",
        "_loop",
        "_thread_id",
    )

    def __init__(
        self,
        task_id: str,
        emit: Callable[[float], None],
        *,
        min_interval_s: float = 0.1,
        min_delta: float = 0.01,
    ) -> None:
        self.task_id = task_id
        self._emit = emit
        self._last_value = 0.0
        self._last_at_s = -math.inf
        self._held: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.min_interval_s = min_interval_s
        self.min_delta = min_delta
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()

    def __call__(self, value: float) -> None:
        """Report progress in [0, 1]; out-of-range values are clamped.

        Raises:
            TypeError: ``value`` is not a real number.
            ValueError: ``value`` is NaN.
        """
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(
                f"Progress must be a number between 0 and 1, not {value!r}."
            )
        if math.isnan(value):
            raise ValueError("Progress must be a number between 0 and 1, not NaN.")
        if self._closed:
            return
        if threading.get_ident() != self._thread_id:
            # Called from a worker thread (asyncio.to_thread): hop back.
            self._loop.call_soon_threadsafe(self, value)
            return
        value = min(1.0, max(0.0, float(value)))
        now_s = time.monotonic()
        due = now_s - self._last_at_s >= self.min_interval_s
        moved = abs(value - self._last_value) >= self.min_delta
        if value == 1.0 or (due and moved):
            self._write(value, now_s)
        elif value != self._last_value:
            self._hold(value, now_s)

    def _write(self, value: float, now_s: float) -> None:
        self._cancel_timer()
        self._held = None
        self._last_value = value
        self._last_at_s = now_s
        self._emit(value)

    def _hold(self, value: float, now_s: float) -> None:
        self._held = value
        if self._timer is None:
            wait_s = max(0.0, self.min_interval_s - (now_s - self._last_at_s))
            self._timer = self._loop.call_later(wait_s, self._flush_held)

    def _flush_held(self) -> None:
        self._timer = None
        if self._held is not None and not self._closed:
            self._write(self._held, time.monotonic())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def flush(self) -> None:
        """Write a value held back by the throttle now: the task is ending,
        and its last reported value goes to the log before its end."""
        if self._held is not None and not self._closed:
            self._write(self._held, time.monotonic())

    def close(self) -> None:
        """Stop writing: the task has ended."""
        self._closed = True
        self._cancel_timer()
