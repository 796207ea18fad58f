"""Rebuild task state from the log, now or as of a past position or time.

Pure folding over events from any source with ``iter_batches`` (every
``EventStore``). Imports only :mod:`engine.events` and the fold.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from engine.events import TaskEvent
from projections.task_info import TaskInfo, apply

__all__ = ["Replay", "replay"]


class _Source(Protocol):
    def iter_batches(
        self, after: int = 0, batch_size: int = 10_000
    ) -> AsyncIterator[list[TaskEvent]]: ...


@dataclass
class Replay:
    """The state of every task as of ``position`` (the checkpoint)."""

    infos: dict[str, TaskInfo] = field(default_factory=dict)
    position: int = 0
    events: int = 0

    def fold(self, event: TaskEvent) -> None:
        """Fold one event and advance the checkpoint."""
        self.infos[event.task_id] = apply(self.infos.get(event.task_id), event)
        self.position = event.position or self.position
        self.events += 1

    def status_counts(self) -> Counter[str]:
        """How many tasks stand in each status."""
        return Counter(info.status.value for info in self.infos.values())


async def replay(
    source: _Source,
    *,
    until_position: int | None = None,
    until_at: dt.datetime | None = None,
    batch_size: int = 10_000,
) -> Replay:
    """Fold the log from the start, stopping after ``until_position`` or at
    the first event later than ``until_at`` (aware datetime)."""
    state = Replay()
    async for batch in source.iter_batches(0, batch_size):
        for event in batch:
            if until_position is not None and (event.position or 0) > until_position:
                return state
            if until_at is not None and event.at > until_at:
                return state
            state.fold(event)
    return state
