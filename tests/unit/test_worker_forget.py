"""forget_finished right after a task ends, on every store: the task's last
events still reach their group with what they said, a forgotten task does
not come back, and its id cannot be taken again while its events are in
flight (on PostgreSQL the tail publishes a node's events after they
commit)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from engine import AsyncTaskWorker, task
from engine.exceptions import DuplicateTaskIdError
from engine.store.base import EventStore

RUNS: list[int] = []


@task("forget_fails_halfway")
async def fails_halfway(progress_callback=None) -> None:
    progress_callback(0.5)
    await asyncio.sleep(0)
    raise ValueError("nope")


@task("forget_once")
async def once(x: int) -> int:
    RUNS.append(x)
    return x


async def _until_type(queue, type_: str) -> list[dict]:
    seen = []
    while not seen or seen[-1]["type"] != type_:
        seen.append(await asyncio.wait_for(queue.get(), 10))
    return seen


async def test_a_task_forgotten_at_once_still_reaches_its_group(store: EventStore):
    async with AsyncTaskWorker(store=store) as worker:
        _, group = worker.events.subscribe("batch-1")
        task_id = await worker.add_task(
            "forget_fails_halfway", metadata={"group_id": "batch-1"}
        )
        with pytest.raises(Exception, match="nope"):
            await worker.get_task_future(task_id)
        forgotten = worker.forget_finished(dt.timedelta(0))

        seen = await _until_type(group, "failed")
        assert seen[-1]["task_id"] == task_id
        assert seen[-1]["group_id"] == "batch-1"
        assert seen[-1]["task_type"] == "forget_fails_halfway"
        assert seen[-1]["progress"] == 0.5

        # Now its events are settled on every store.
        forgotten += worker.forget_finished(dt.timedelta(0))
        assert forgotten == 1
        # Another task's events pass the same way: the forgotten one's
        # were all handled before them, and it did not come back.
        _, marks = worker.events.subscribe("mark")
        await worker.add_task("forget_once", 0, metadata={"group_id": "mark"})
        await _until_type(marks, "completed")
        assert worker.get_task_info(task_id) is None


async def test_an_id_is_not_free_while_its_events_are_in_flight(store: EventStore):
    RUNS.clear()
    async with AsyncTaskWorker(store=store) as worker:
        task_id = await worker.add_task("forget_once", 1, task_id="job-r3")
        assert await worker.get_task_future(task_id) == 1
        worker.forget_finished(dt.timedelta(0))
        with pytest.raises(DuplicateTaskIdError):
            await worker.add_task("forget_once", 2, task_id="job-r3")
        history = await worker.history("job-r3")

    assert [e.type.value for e in history] == ["queued", "started", "completed"]
    assert RUNS == [1]
