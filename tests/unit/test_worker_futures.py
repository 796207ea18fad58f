"""Futures: get_task_future(s), wait_for_tasks, wait_for_any_task."""

from __future__ import annotations

import asyncio

import pytest
from worker_support import gated

from engine import AsyncTaskWorker, TaskNotFoundError, TaskStatus


async def double(value):
    return value * 2


async def fails(message):
    raise ValueError(message)


async def test_future_resolves_to_result(make_worker):
    worker = await make_worker()

    task_id = await worker.add_task(double, 4)
    result = await worker.get_task_future(task_id)

    assert result == 8


async def test_future_of_finished_task_resolves_at_once(make_worker):
    worker = await make_worker()
    task_id = await worker.add_task(double, 5)
    await worker.get_task_future(task_id)

    future = worker.get_task_future(task_id)

    assert future.done()
    assert future.result() == 10


async def test_future_of_failed_task_raises_exception_holding_error(make_worker):
    worker = await make_worker()

    task_id = await worker.add_task(fails, "disk is full")

    with pytest.raises(Exception, match="disk is full"):
        await worker.get_task_future(task_id)
    assert worker.get_task_info(task_id).status is TaskStatus.FAILED


async def test_future_of_failed_task_raises_same_type_early_or_late(make_worker):
    worker = await make_worker()
    task_id = await worker.add_task(fails, "disk is full")
    early = worker.get_task_future(task_id)
    with pytest.raises(Exception, match="disk is full") as early_error:
        await early

    with pytest.raises(Exception, match="disk is full") as late_error:
        await worker.get_task_future(task_id)

    assert type(late_error.value) is type(early_error.value)


async def test_future_of_task_failed_before_restart_raises_error_text(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/log.db"
    async with AsyncTaskWorker(store=url) as first:
        task_id = await first.add_task(fails, "bad row 7")
        with pytest.raises(Exception, match="bad row 7"):
            await first.get_task_future(task_id)

    async with AsyncTaskWorker(store=url) as second:
        with pytest.raises(Exception, match="bad row 7"):
            await second.get_task_future(task_id)


async def test_future_of_cancelled_task_raises_cancelled_error(make_worker):
    worker = await make_worker()
    wait_on, _, entered = gated()
    task_id = await worker.add_task(wait_on)
    future = worker.get_task_future(task_id)
    await entered.wait()

    await worker.cancel_task(task_id)

    with pytest.raises(asyncio.CancelledError):
        await future


async def test_get_task_future_unknown_id_raises_key_error(make_worker):
    worker = await make_worker()

    with pytest.raises(KeyError) as caught:
        worker.get_task_future("no-such-task")

    assert isinstance(caught.value, TaskNotFoundError)
    assert "no-such-task" in str(caught.value)


async def test_get_task_futures_returns_one_future_per_id_in_order(make_worker):
    worker = await make_worker()
    ids = [await worker.add_task(double, i) for i in range(5)]

    futures = worker.get_task_futures(ids)
    results = await asyncio.gather(*futures)

    assert len(futures) == 5
    assert results == [0, 2, 4, 6, 8]


async def test_get_task_futures_with_gather_return_exceptions(make_worker):
    worker = await make_worker()
    ok = await worker.add_task(double, 1)
    bad = await worker.add_task(fails, "nope")

    results = await asyncio.gather(
        *worker.get_task_futures([ok, bad]), return_exceptions=True
    )

    assert results[0] == 2
    assert isinstance(results[1], Exception)
    assert "nope" in str(results[1])


async def test_get_task_futures_unknown_id_raises_key_error(make_worker):
    worker = await make_worker()
    task_id = await worker.add_task(double, 1)

    with pytest.raises(KeyError):
        worker.get_task_futures([task_id, "missing"])


async def test_wait_for_tasks_returns_results_in_order_of_ids(make_worker):
    worker = await make_worker(max_workers=1)
    first_fn, gate, entered = gated()
    slow = await worker.add_task(first_fn)
    await entered.wait()
    fast = await worker.add_task(double, 21)

    waiter = asyncio.ensure_future(worker.wait_for_tasks([fast, slow]))
    for _ in range(5):
        await asyncio.sleep(0)
    waiting_while_gate_closed = not waiter.done()
    gate.set()
    results = await waiter

    assert waiting_while_gate_closed
    assert results == [42, "released"]


async def test_wait_for_tasks_raises_timeout_error_when_not_done(make_worker):
    worker = await make_worker()
    wait_on, gate, _ = gated()
    task_id = await worker.add_task(wait_on)

    with pytest.raises(TimeoutError):
        await worker.wait_for_tasks([task_id], timeout=0.05)

    assert worker.get_task_info(task_id).status is TaskStatus.RUNNING
    gate.set()
    assert await worker.wait_for_tasks([task_id]) == ["released"]


async def test_wait_for_tasks_raises_task_error(make_worker):
    worker = await make_worker()
    ok = await worker.add_task(double, 1)
    bad = await worker.add_task(fails, "broken input")

    with pytest.raises(Exception, match="broken input"):
        await worker.wait_for_tasks([ok, bad])


async def test_wait_for_tasks_with_no_ids_returns_empty_list(make_worker):
    worker = await make_worker()

    results = await worker.wait_for_tasks([])

    assert results == []


async def test_wait_for_any_task_returns_first_to_finish(make_worker):
    worker = await make_worker(max_workers=2)
    slow_fn, gate, entered = gated()
    slow = await worker.add_task(slow_fn)
    await entered.wait()
    fast = await worker.add_task(double, 8)

    result, task_id = await worker.wait_for_any_task([slow, fast])

    assert (result, task_id) == (16, fast)
    assert worker.get_task_info(slow).status is TaskStatus.RUNNING
    gate.set()
    await worker.get_task_future(slow)


async def test_wait_for_any_task_raises_timeout_error(make_worker):
    worker = await make_worker()
    wait_on, gate, _ = gated()
    task_id = await worker.add_task(wait_on)

    with pytest.raises(TimeoutError):
        await worker.wait_for_any_task([task_id], timeout=0.05)

    gate.set()
    assert await worker.get_task_future(task_id) == "released"


async def test_wait_for_any_task_unknown_id_raises_key_error(make_worker):
    worker = await make_worker()

    with pytest.raises(KeyError):
        await worker.wait_for_any_task(["missing"])


async def test_waiting_does_not_keep_futures_of_finished_tasks(make_worker):
    worker = await make_worker()
    ids = [await worker.add_task(double, i) for i in range(3)]

    first = await worker.wait_for_tasks(ids)
    second = await worker.wait_for_tasks(ids)

    assert first == second == [0, 2, 4]


async def test_futures_given_up_on_a_long_task_do_not_pile_up(make_worker):
    worker = await make_worker()
    body, gate, entered = gated()
    task_id = await worker.add_task(body)
    await entered.wait()

    for _ in range(100):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(worker.get_task_future(task_id), 0)
    waiter = worker.get_task_future(task_id)
    held = len(worker._runs[task_id].waiters)
    gate.set()

    assert held <= 16
    assert await waiter == "released"
