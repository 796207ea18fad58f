"""The priority queue of runnable tasks: lower priority first, FIFO within
one priority. Entries are task ids; a cancelled entry is skipped when popped.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque

__all__ = ["TaskQueue"]


class TaskQueue:
    """One FIFO of task ids per priority, and a heap of the priorities that
    have any: putting and taking cost O(1) while a single priority is in
    use (the common case), O(log p) with p distinct priorities waiting."""

    def __init__(self) -> None:
        self._fifos: dict[int, deque[str]] = {}
        self._priorities: list[int] = []
        self._size = 0
        self._getters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return self._size

    def put(self, priority: int, task_id: str) -> None:
        """Queue ``task_id``; wakes one waiting getter."""
        fifo = self._fifos.get(priority)
        if fifo is None:
            fifo = self._fifos[priority] = deque()
            heapq.heappush(self._priorities, priority)
        fifo.append(task_id)
        self._size += 1
        if self._getters:
            self._wake_one()

    def get_nowait(self) -> str | None:
        """The next task id, or None when the queue is empty (no coroutine
        to create and await when there is work)."""
        return self._take() if self._size else None

    async def get(self) -> str:
        """The next task id, waiting while the queue is empty."""
        while not self._size:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                # Pass a wake-up we may have swallowed to the next getter.
                if getter.done() and not getter.cancelled() and self._size:
                    self._wake_one()
                raise
        return self._take()

    def _take(self) -> str:
        priority = self._priorities[0]
        fifo = self._fifos[priority]
        task_id = fifo.popleft()
        if not fifo:
            heapq.heappop(self._priorities)
            del self._fifos[priority]
        self._size -= 1
        return task_id

    def _wake_one(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    def drain(self) -> list[str]:
        """Remove and return every queued id, in run order."""
        ids = [task_id for p in sorted(self._fifos) for task_id in self._fifos[p]]
        self._fifos.clear()
        self._priorities.clear()
        self._size = 0
        return ids
