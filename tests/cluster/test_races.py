"""Races between nodes found by QA: a recovery from lease rows read
earlier, a refused duplicate id after a claim at birth, and a cancel that
loses to the task's end on another node."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from engine import AsyncTaskWorker, task

pytestmark = pytest.mark.postgres

GATES: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}


def gate(key: str) -> tuple[asyncio.Event, asyncio.Event]:
    """``(entered, release)`` of the gated task run with ``key``."""
    return GATES.setdefault(key, (asyncio.Event(), asyncio.Event()))


@task("races_gated")
async def gated(key: str) -> str:
    entered, release = gate(key)
    entered.set()
    await release.wait()
    return "done"


@contextlib.asynccontextmanager
async def runner_and_idle(url: str, **idle_options: Any):
    """Two nodes on ``url``: one that claims, one that only watches."""
    async with (
        AsyncTaskWorker(store=url, node_id="runner") as runner,
        AsyncTaskWorker(store=url, node_id="idle", **idle_options) as idle,
    ):
        await idle.cluster.stop_claiming()
        yield runner, idle


async def test_stale_lost_lease_rows_do_not_requeue_a_task_running_elsewhere(
    postgres_url,
):
    async with runner_and_idle(postgres_url) as (runner, recoverer):
        entered, release = gate("rows")
        task_id = await runner.add_task("races_gated", "rows")
        await entered.wait()
        before = await runner.history(task_id)

        # Rows read earlier, when a node now lost held the task.
        await recoverer.cluster._lease.recover([(task_id, "lost-node")])
        after = await runner.history(task_id)
        release.set()
        result = await runner.get_task_future(task_id)
        final = await runner.history(task_id)

    assert [e.type.value for e in after] == [e.type.value for e in before]
    assert result == "done"
    assert [e.type.value for e in final] == ["queued", "started", "completed"]


@task("races_echo")
async def echo(value: int) -> int:
    return value


async def test_a_refused_duplicate_id_gives_back_the_slot_it_was_claimed_into(
    postgres_url,
):
    import datetime as dt

    from engine.exceptions import DuplicateTaskIdError

    async with AsyncTaskWorker(store=postgres_url, max_workers=2) as worker:
        ids = [f"once-{n}" for n in range(2)]
        for task_id in ids:
            await worker.add_task("races_echo", 1, task_id=task_id)
            await worker.get_task_future(task_id)
        # The tail publishes in log order: once a later task's end is out,
        # so are these tasks' events, and they can be forgotten.
        _, marks = worker.events.subscribe("mark")
        await worker.add_task("races_echo", 0, metadata={"group_id": "mark"})
        while (await asyncio.wait_for(marks.get(), 10))["type"] != "completed":
            pass
        assert worker.forget_finished(dt.timedelta(0)) == 3
        for task_id in ids:  # in the log, no longer in the projection
            with pytest.raises(DuplicateTaskIdError):
                await worker.add_task("races_echo", 1, task_id=task_id)

        fresh = await worker.add_task("races_echo", 2)
        result = await asyncio.wait_for(worker.get_task_future(fresh), 10)

    assert result == 2


async def test_a_cancel_that_loses_the_race_leaves_the_futures_to_the_log(
    postgres_url,
):
    async with runner_and_idle(postgres_url) as (runner, producer):
        entered, release = gate("cancel")
        task_id = await producer.add_task("races_gated", "cancel")
        future = producer.get_task_future(task_id)
        await entered.wait()
        held, deliver = [], producer.cluster._deliver
        producer.cluster._deliver = held.append  # the producer's view lags
        release.set()
        assert await runner.get_task_future(task_id) == "done"
        await runner.history(task_id)  # the end is in the log

        cancelled = await producer.cancel_task(task_id)
        producer.cluster._deliver = deliver
        for batch in held:
            deliver(batch)
        result = await asyncio.wait_for(future, 10)
        history = await producer.history(task_id)

    assert cancelled is False
    assert result == "done"
    assert [e.type.value for e in history] == ["queued", "started", "completed"]


async def test_events_arriving_while_a_conflicted_task_is_refolded_keep_its_group(
    postgres_url,
):
    from engine import EventManager

    manager = EventManager()
    async with runner_and_idle(postgres_url, event_manager=manager) as (
        runs,
        watches,
    ):
        _, group = manager.subscribe("G")
        _, release = gate("voided")
        task_id = await runs.add_task(
            "races_gated", "voided", metadata={"group_id": "G"}
        )
        while (await asyncio.wait_for(group.get(), 10))["type"] != "started":
            pass
        held, deliver = [], watches.cluster._deliver
        watches.cluster._deliver = held.append  # the watcher's view lags
        release.set()
        assert await runs.get_task_future(task_id) == "done"
        await runs.history(task_id)
        on_rejected = watches._journal.on_rejected

        def catch_up(rejected_id, exc):
            on_rejected(rejected_id, exc)  # the refold starts: the task is out
            watches.cluster._deliver = deliver
            for batch in held:
                deliver(batch)

        watches._journal.on_rejected = catch_up
        assert await watches.cancel_task(task_id) is False
        seen = await asyncio.wait_for(group.get(), 10)

    assert seen["type"] == "completed"
    assert seen["group_id"] == "G"
    assert seen["task_type"] == "races_gated"


async def test_cancelling_a_forgotten_task_does_not_bring_it_back(postgres_url):
    import datetime as dt

    async with AsyncTaskWorker(store=postgres_url) as worker:
        _, marks = worker.events.subscribe("mark")
        task_id = await worker.add_task("races_echo", 1, metadata={"group_id": "mark"})
        while (await asyncio.wait_for(marks.get(), 10))["type"] != "completed":
            pass
        assert worker.forget_finished(dt.timedelta(0)) == 1

        assert await worker.cancel_task(task_id) is False
        assert worker.get_task_info(task_id) is None
