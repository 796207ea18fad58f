"""A worker's recent events describe each task as it was when the event was
published, on every store: forgetting the task afterwards, or its next
attempt, changes none of them."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from engine import AsyncTaskWorker, task
from engine.store.base import EventStore


@task("recent_fails_halfway")
async def fails_halfway(progress_callback=None) -> None:
    progress_callback(0.5)
    raise RuntimeError("boom")


@task("recent_noop")
async def noop() -> None:
    return None


@pytest.mark.parametrize("read_early", [False, True])
async def test_recent_events_keep_the_group_type_and_progress_they_were_published_with(
    store: EventStore, read_early: bool
):
    async with AsyncTaskWorker(max_workers=2, store=store) as worker:
        task_id = await worker.add_task(
            "recent_fails_halfway", metadata={"group_id": "G"}
        )
        with pytest.raises(Exception, match="boom"):
            await worker.get_task_future(task_id)
        # Events reach the bus in log order: once a later task's first event
        # arrives (to a subscriber of its own group only, so the first
        # task's events stay unrendered), the first task's are published.
        _, marks = worker.events.subscribe("mark")
        await worker.add_task("recent_noop", metadata={"group_id": "mark"})
        await asyncio.wait_for(marks.get(), 10)

        def mine() -> list[tuple]:
            return [
                (e["type"], e["group_id"], e["task_type"], e["progress"])
                for e in worker.events.get_recent_events()
                if e.get("task_id") == task_id
            ]

        early = mine() if read_early else None
        assert worker.forget_finished(dt.timedelta(0)) >= 1
        assert worker.get_task_info(task_id) is None
        late = mine()

    types = [row[0] for row in late]
    assert types[-1] == "failed"
    assert {row[1] for row in late} == {"G"}
    assert {row[2] for row in late} == {"recent_fails_halfway"}
    assert late[-1][3] == 0.5  # the progress the task had when it failed
    if early is not None:
        assert early == late


async def test_a_shared_event_manager_keeps_no_stopped_worker_log_alive():
    import gc
    import weakref

    from engine import EventManager
    from engine.store.memory import MemoryEventStore

    manager = EventManager()
    store = MemoryEventStore()
    async with AsyncTaskWorker(store=store, event_manager=manager) as worker:
        task_id = await worker.add_task("recent_noop", metadata={"group_id": "G"})
        await worker.get_task_future(task_id)
    gone = weakref.ref(store)
    del store, worker
    gc.collect()

    assert gone() is None
    recent = manager.get_recent_events()
    assert [e["type"] for e in recent] == ["queued", "started", "completed"]
    assert {e["group_id"] for e in recent} == {"G"}
