"""The priority queue of runnable tasks: lower priority first, FIFO within
one priority. Entries are task ids; a cancelled entry is skipped when popped.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque

__all__ = ["TaskQueue"]


class TaskQueue:
    """A heap of ``(priority, sequence, task_id)`` that awaiting getters drain."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._sequence = itertools.count()
        self._getters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._heap)

    def put(self, priority: int, task_id: str) -> None:
        """Queue ``task_id``; wakes one waiting getter."""
        heapq.heappush(self._heap, (priority, next(self._sequence), task_id))
        self._wake_one()

    async def get(self) -> str:
        """The next task id, waiting while the queue is empty."""
        while not self._heap:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                # Pass a wake-up we may have swallowed to the next getter.
                if getter.done() and not getter.cancelled() and self._heap:
                    self._wake_one()
                raise
        return heapq.heappop(self._heap)[2]

    def _wake_one(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    def drain(self) -> list[str]:
        """Remove and return every queued id, in run order."""
        ids = [entry[2] for entry in sorted(self._heap)]
        self._heap.clear()
        return ids
