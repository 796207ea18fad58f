"""Helpers of the cluster tests: enqueueing as ``add_tasks`` writes, and
bounded polls of the database."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from engine.events import EventType, TaskEvent, utcnow
from engine.store.postgres import PostgresEventStore


async def enqueue(url: str, specs: list[dict[str, Any]]) -> list[str]:
    """Append ``queued`` events as ``add_tasks`` writes them; their ids."""
    store = PostgresEventStore(url)
    await store.open()
    try:
        events = [
            TaskEvent.build(
                None, spec["id"], 1, EventType.QUEUED, utcnow(), spec["data"]
            )
            for spec in specs
        ]
        for start in range(0, len(events), 1000):
            await store.append(events[start : start + 1000])
    finally:
        await store.close()
    return [spec["id"] for spec in specs]


async def poll(
    check: Callable[[], Awaitable[Any]], timeout_s: float, every_s: float = 0.05
) -> Any:
    """Call ``check`` until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Condition not met within {timeout_s} s.")
        await asyncio.sleep(every_s)


async def last_events(db: asyncpg.Connection) -> dict[str, tuple[str, dict]]:
    """Each task's last event type and data."""
    rows = await db.fetch(
        "SELECT DISTINCT ON (task_id) task_id, type, data::text FROM task_events "
        "ORDER BY task_id, version DESC"
    )
    return {row[0]: (row[1], json.loads(row[2])) for row in rows}
