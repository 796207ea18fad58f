"""cancel_task: pending tasks never run, running ones end CANCELLED and stay
so, and a True answer is never a lie, however it races the task's start."""

from __future__ import annotations

import asyncio
import logging

import pytest
from worker_support import gated

from engine import AsyncTaskWorker, EventType, TaskStatus


def flagged():
    """A task function recording whether its body entered and finished;
    it holds its worker until ``gate`` is set."""
    flags = {"entered": False, "finished": False}
    gate, entered = asyncio.Event(), asyncio.Event()

    async def body():
        flags["entered"] = True
        entered.set()
        await gate.wait()
        flags["finished"] = True
        return "finished"

    return body, flags, gate, entered


async def test_cancel_pending_task_returns_true_and_task_never_runs(make_worker):
    worker = await make_worker(max_workers=1)
    blocker, gate, entered = gated()
    blocker_id = await worker.add_task(blocker)
    await entered.wait()
    body, flags, body_gate, _ = flagged()
    body_gate.set()
    task_id = await worker.add_task(body)

    cancelled = await worker.cancel_task(task_id)
    gate.set()
    await worker.get_task_future(blocker_id)
    after = await worker.add_task(blocker)
    await worker.get_task_future(after)

    assert cancelled is True
    assert flags == {"entered": False, "finished": False}
    info = worker.get_task_info(task_id)
    assert info.status is TaskStatus.CANCELLED
    assert info.started_at is None
    assert info.completed_at is not None
    types = [event.type for event in await worker.history(task_id)]
    assert types == [EventType.QUEUED, EventType.CANCELLED]


async def test_cancel_running_task_interrupts_it_and_it_stays_cancelled(
    make_worker,
):
    worker = await make_worker(max_workers=1)
    body, flags, gate, entered = flagged()
    task_id = await worker.add_task(body)
    await entered.wait()

    cancelled = await worker.cancel_task(task_id)
    gate.set()
    probe = await worker.get_task_future(await worker.add_task(_answer))

    assert cancelled is True
    assert probe == 42
    assert flags == {"entered": True, "finished": False}
    info = worker.get_task_info(task_id)
    assert info.status is TaskStatus.CANCELLED
    assert info.error_type == "CancelledError"
    types = [event.type for event in await worker.history(task_id)]
    assert types == [EventType.QUEUED, EventType.STARTED, EventType.CANCELLED]


async def test_cancel_running_task_frees_its_slot_at_once(make_worker):
    worker = await make_worker(max_workers=1)
    body, _, _, entered = flagged()
    task_id = await worker.add_task(body)
    await entered.wait()

    await worker.cancel_task(task_id)
    other = await worker.add_task(_answer)
    result = await worker.get_task_future(other)

    assert result == 42


async def _answer():
    return 42


async def test_cancelled_running_task_that_raises_on_cleanup_stays_cancelled(
    make_worker,
):
    worker = await make_worker()
    entered = asyncio.Event()

    async def stubborn():
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task_id = await worker.add_task(stubborn)
    await entered.wait()

    cancelled = await worker.cancel_task(task_id)
    for _ in range(10):
        await asyncio.sleep(0)

    assert cancelled is True
    assert worker.get_task_info(task_id).status is TaskStatus.CANCELLED
    types = [event.type for event in await worker.history(task_id)]
    assert types[-1] is EventType.CANCELLED
    assert EventType.FAILED not in types


async def test_cancelled_running_task_that_swallows_cancel_stays_cancelled(
    make_worker,
):
    worker = await make_worker(max_workers=1)
    entered, late = asyncio.Event(), asyncio.Event()
    returned = asyncio.Event()

    async def swallower():
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await late.wait()
        returned.set()
        return "late result"

    task_id = await worker.add_task(swallower)
    await entered.wait()

    cancelled = await worker.cancel_task(task_id)
    other = await worker.add_task(_answer)
    other_result = await worker.get_task_future(other)
    late.set()
    await returned.wait()
    for _ in range(10):
        await asyncio.sleep(0)

    assert cancelled is True
    assert other_result == 42
    info = worker.get_task_info(task_id)
    assert info.status is TaskStatus.CANCELLED
    assert info.result is None
    types = [event.type for event in await worker.history(task_id)]
    assert types == [EventType.QUEUED, EventType.STARTED, EventType.CANCELLED]


async def test_task_raising_cancelled_error_itself_ends_cancelled(make_worker):
    worker = await make_worker()

    async def gives_up():
        raise asyncio.CancelledError()

    task_id = await worker.add_task(gives_up)
    with pytest.raises(asyncio.CancelledError):
        await worker.get_task_future(task_id)
    follow_up = await worker.get_task_future(await worker.add_task(_answer))

    assert worker.get_task_info(task_id).status is TaskStatus.CANCELLED
    assert follow_up == 42


async def test_cancel_unknown_task_returns_false(make_worker):
    worker = await make_worker()

    cancelled = await worker.cancel_task("no-such-task")

    assert cancelled is False


async def test_cancel_completed_task_returns_false_and_keeps_result(make_worker):
    worker = await make_worker()
    task_id = await worker.add_task(_answer)
    await worker.get_task_future(task_id)

    cancelled = await worker.cancel_task(task_id)

    assert cancelled is False
    info = worker.get_task_info(task_id)
    assert info.status is TaskStatus.COMPLETED
    assert info.result == 42


async def test_cancel_failed_task_returns_false(make_worker):
    worker = await make_worker()

    async def boom():
        raise ValueError("boom")

    task_id = await worker.add_task(boom)
    with pytest.raises(Exception, match="boom"):
        await worker.get_task_future(task_id)

    cancelled = await worker.cancel_task(task_id)

    assert cancelled is False
    assert worker.get_task_info(task_id).status is TaskStatus.FAILED


async def test_cancel_twice_returns_true_then_false(make_worker):
    worker = await make_worker()
    body, _, _, entered = flagged()
    task_id = await worker.add_task(body)
    await entered.wait()

    first = await worker.cancel_task(task_id)
    second = await worker.cancel_task(task_id)

    assert (first, second) == (True, False)
    types = [event.type for event in await worker.history(task_id)]
    assert types.count(EventType.CANCELLED) == 1


async def test_future_of_cancelled_task_raises_cancelled_error(make_worker):
    worker = await make_worker()
    body, _, _, entered = flagged()
    task_id = await worker.add_task(body)
    future = worker.get_task_future(task_id)
    await entered.wait()

    await worker.cancel_task(task_id)

    with pytest.raises(asyncio.CancelledError):
        await future
    with pytest.raises(asyncio.CancelledError):
        await worker.get_task_future(task_id)


async def test_cancel_logs_task_cancelled_action(make_worker, caplog):
    worker = await make_worker()
    body, _, _, entered = flagged()
    task_id = await worker.add_task(body)
    await entered.wait()

    with caplog.at_level(logging.INFO, logger="engine"):
        await worker.cancel_task(task_id)

    actions = [(r.action, r.task_id) for r in caplog.records if hasattr(r, "action")]
    assert ("task_cancelled", task_id) in actions


async def test_cancelled_pending_task_does_not_run_after_restart(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/log.db"
    ran = []

    async def must_not_run():
        ran.append(True)

    async with AsyncTaskWorker(store=url, max_workers=1) as first:
        blocker, gate, entered = gated()
        blocker_id = await first.add_task(blocker)
        await entered.wait()
        task_id = await first.add_task(must_not_run)
        await first.cancel_task(task_id)
        gate.set()
        await first.get_task_future(blocker_id)

    async with AsyncTaskWorker(store=url, max_workers=1) as second:
        probe = await second.get_task_future(await second.add_task(_answer))
        info = second.get_task_info(task_id)

    assert probe == 42
    assert ran == []
    assert info.status is TaskStatus.CANCELLED


async def test_cancel_racing_task_start_is_true_only_when_body_never_finished(
    make_worker,
):
    worker = await make_worker(max_workers=2)
    trials = []

    for i in range(300):
        flags = {"entered": False, "finished": False}
        started = asyncio.Event()

        async def body(flags=flags, started=started, steps=i % 4):
            flags["entered"] = True
            started.set()
            for _ in range(steps):
                await asyncio.sleep(0)
            flags["finished"] = True
            return "done"

        task_id = await worker.add_task(body)
        if i % 3 == 1:
            for _ in range(i % 5):
                await asyncio.sleep(0)
        elif i % 3 == 2:
            await started.wait()
            for _ in range(i % 2):
                await asyncio.sleep(0)
        cancelled = await worker.cancel_task(task_id)
        if not cancelled:
            await worker.get_task_future(task_id)
        trials.append((task_id, cancelled, flags))
    for _ in range(10):
        await asyncio.sleep(0)

    outcomes = {cancelled for _, cancelled, _ in trials}
    assert outcomes == {True, False}
    assert any(cancelled and flags["entered"] for _, cancelled, flags in trials)
    for task_id, cancelled, flags in trials:
        status = worker.get_task_info(task_id).status
        if cancelled:
            assert not flags["finished"], task_id
            assert status is TaskStatus.CANCELLED, task_id
        else:
            assert flags["finished"], task_id
            assert status is TaskStatus.COMPLETED, task_id
        last = (await worker.history(task_id))[-1].type
        assert last is (EventType.CANCELLED if cancelled else EventType.COMPLETED)
