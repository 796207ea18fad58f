"""Timeouts: worker-wide and per task; a timed-out task ends FAILED "timed
out" at about its timeout, frees its slot at once, and a late result from a
thread changes nothing."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest
from worker_support import gated

from engine import AsyncTaskWorker, EventType, TaskStatus


async def never_ends():
    await asyncio.Event().wait()


async def answer():
    return 42


async def test_worker_wide_timeout_fails_task_with_timed_out(make_worker):
    worker = await make_worker(task_timeout=0.05)
    started_s = time.monotonic()

    task_id = await worker.add_task(never_ends)
    with pytest.raises(Exception, match="timed out"):
        await worker.get_task_future(task_id)
    elapsed_s = time.monotonic() - started_s

    info = worker.get_task_info(task_id)
    assert info.status is TaskStatus.FAILED
    assert info.error == "timed out"
    assert info.error_type == "TimeoutError"
    assert info.completed_at is not None
    assert 0.04 <= elapsed_s < 2.0


async def test_per_task_timeout_applies_without_worker_timeout(make_worker):
    worker = await make_worker()

    task_id = await worker.add_task(never_ends, timeout=0.05)
    with pytest.raises(Exception, match="timed out"):
        await worker.get_task_future(task_id)

    info = worker.get_task_info(task_id)
    assert info.status is TaskStatus.FAILED
    assert info.error == "timed out"
    assert info.completed_at >= info.started_at


async def test_per_task_timeout_overrides_worker_timeout(make_worker):
    worker = await make_worker(task_timeout=0.05)
    wait_on, gate, entered = gated()
    patient = await worker.add_task(wait_on, timeout=30)
    await entered.wait()

    short = await worker.add_task(never_ends)
    with pytest.raises(Exception, match="timed out"):
        await worker.get_task_future(short)
    status_when_default_expired = worker.get_task_info(patient).status
    gate.set()
    result = await worker.get_task_future(patient)

    assert status_when_default_expired is TaskStatus.RUNNING
    assert result == "released"
    assert worker.get_task_info(patient).status is TaskStatus.COMPLETED


async def test_timed_out_task_history_ends_with_failed_event(make_worker):
    worker = await make_worker()

    task_id = await worker.add_task(never_ends, timeout=0.05)
    with pytest.raises(Exception, match="timed out"):
        await worker.get_task_future(task_id)
    history = await worker.history(task_id)

    assert [event.type for event in history] == [
        EventType.QUEUED,
        EventType.STARTED,
        EventType.FAILED,
    ]
    assert history[-1].data["error"] == "timed out"
    assert history[-1].data["timeout"] == 0.05


async def test_task_finishing_within_its_timeout_completes(make_worker):
    worker = await make_worker(task_timeout=30)

    task_id = await worker.add_task(answer)
    result = await worker.get_task_future(task_id)

    assert result == 42
    assert worker.get_task_info(task_id).status is TaskStatus.COMPLETED


async def test_timeout_frees_slot_even_when_body_ignores_cancellation(
    make_worker,
):
    worker = await make_worker(max_workers=1)
    release, returned = asyncio.Event(), asyncio.Event()

    async def ignores_cancel():
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue
        returned.set()
        return "late"

    stuck = await worker.add_task(ignores_cancel, timeout=0.05)
    with pytest.raises(Exception, match="timed out"):
        await worker.get_task_future(stuck)
    other_result = await worker.get_task_future(await worker.add_task(answer))
    release.set()
    await returned.wait()
    for _ in range(10):
        await asyncio.sleep(0)

    assert other_result == 42
    info = worker.get_task_info(stuck)
    assert info.status is TaskStatus.FAILED
    assert info.result is None
    assert [e.type for e in await worker.history(stuck)][-1] is EventType.FAILED


async def test_timeout_while_waiting_on_thread_fails_at_once_and_late_result_is_ignored(
    make_worker,
):
    # One executor thread: a job submitted after the blocking call is
    # processed after the blocking call's result is handed to the loop.
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(1))
    worker = await make_worker(max_workers=1)
    unblock = threading.Event()

    def blocking():
        unblock.wait(10)
        return "late thread result"

    async def waits_on_thread():
        return await asyncio.to_thread(blocking)

    started_s = time.monotonic()
    try:
        task_id = await worker.add_task(waits_on_thread, timeout=0.1)
        with pytest.raises(Exception, match="timed out"):
            await worker.get_task_future(task_id)
        failed_after_s = time.monotonic() - started_s
        other = await worker.add_task(answer)
        other_result = await worker.get_task_future(other)
        thread_still_blocked = not unblock.is_set()
        info_before = worker.get_task_info(task_id)
        events_before = await worker.history(task_id)
    finally:
        unblock.set()
    await asyncio.to_thread(lambda: None)
    for _ in range(10):
        await asyncio.sleep(0)

    assert 0.09 <= failed_after_s < 2.0
    assert other_result == 42
    assert thread_still_blocked
    assert info_before.status is TaskStatus.FAILED
    assert info_before.error == "timed out"
    assert worker.get_task_info(task_id) == info_before
    assert worker.get_task_info(task_id).result is None
    events_after = await worker.history(task_id)
    assert [(e.version, e.type) for e in events_after] == [
        (e.version, e.type) for e in events_before
    ]
    assert events_after[-1].type is EventType.FAILED


async def test_timeout_on_thread_frees_slot_for_many_followers(make_worker):
    worker = await make_worker(max_workers=2)
    unblock = threading.Event()

    async def waits_on_thread():
        return await asyncio.to_thread(unblock.wait, 10)

    try:
        stuck = [await worker.add_task(waits_on_thread, timeout=0.05) for _ in range(2)]
        outcomes = await asyncio.gather(
            *worker.get_task_futures(stuck), return_exceptions=True
        )
        followers = [await worker.add_task(answer) for _ in range(5)]
        results = await worker.wait_for_tasks(followers)
    finally:
        unblock.set()

    assert [str(outcome) for outcome in outcomes] == ["timed out", "timed out"]
    assert results == [42] * 5
    statuses = {worker.get_task_info(t).status for t in stuck}
    assert statuses == {TaskStatus.FAILED}


async def test_worker_timeout_applies_to_task_resumed_after_restart(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/log.db"
    async with AsyncTaskWorker(store=url, max_workers=1) as first:
        wait_on, gate, entered = gated()
        blocker = await first.add_task(wait_on)
        await entered.wait()
        queued = await first.add_task(never_ends, timeout=0.05)
        # Released now, the blocker ends after stop() began: the queued task
        # stays queued in the log.
        gate.set()

    async with AsyncTaskWorker(store=url, max_workers=1) as second:
        with pytest.raises(Exception, match="timed out"):
            await second.get_task_future(queued)

        info = second.get_task_info(queued)

    assert first.get_task_info(blocker).status is TaskStatus.COMPLETED
    assert info.attempt == 1
    assert info.status is TaskStatus.FAILED
    assert info.error == "timed out"
