"""The subscriber queue's fast paths: delivery without put_nowait, get_batch."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.bus import OVERFLOW, EventManager


def event(position: int) -> dict[str, Any]:
    return {"position": position, "type": "progress", "group_id": "g"}


def publish(manager: EventManager, *positions: int) -> None:
    for position in positions:
        manager.publish_event(f"e{position}", "g", event(position))


async def test_delivered_events_count_for_task_done_and_join_as_put_nowait() -> None:
    manager = EventManager()
    _, queue = manager.subscribe()
    twin: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for position in (1, 2):
        twin.put_nowait(event(position))
    publish(manager, 1, 2)

    for q in (queue, twin):
        assert q.qsize() == 2
        joined = asyncio.ensure_future(q.join())
        for _ in range(2):
            await q.get()
            q.task_done()
        await asyncio.wait_for(joined, 1)
        with pytest.raises(ValueError):
            q.task_done()


async def test_get_batch_takes_everything_queued_up_to_max_items() -> None:
    manager = EventManager()
    _, queue = manager.subscribe()
    publish(manager, *range(1, 6))

    first = await queue.get_batch(3)
    rest = await queue.get_batch(10)

    assert [e["position"] for e in first] == [1, 2, 3]
    assert [e["position"] for e in rest] == [4, 5]
    assert queue.empty()


async def test_get_batch_waits_for_the_next_publish() -> None:
    manager = EventManager()
    _, queue = manager.subscribe()
    waiting = asyncio.Event()

    async def read() -> list[dict[str, Any]]:
        waiting.set()
        return await queue.get_batch()

    reader = asyncio.create_task(read())
    await waiting.wait()
    publish(manager, 1)

    assert [e["position"] for e in await asyncio.wait_for(reader, 1)] == [1]


async def test_get_batch_ends_with_the_overflow_marker_then_resumes() -> None:
    manager = EventManager(max_queue_size=2)
    _, queue = manager.subscribe()
    publish(manager, 1, 2, 3, 4)

    batch = await queue.get_batch(10)
    publish(manager, 5)
    after = await queue.get_batch(10)

    assert [e.get("position") for e in batch[:2]] == [1, 2]
    assert batch[2]["type"] == OVERFLOW
    assert (batch[2]["dropped"], batch[2]["resume_after_position"]) == (2, 2)
    assert len(batch) == 3
    assert [e["position"] for e in after] == [5]


async def test_get_batch_rejects_max_items_below_one() -> None:
    _, queue = EventManager().subscribe()

    with pytest.raises(ValueError, match="max_items"):
        await queue.get_batch(0)
