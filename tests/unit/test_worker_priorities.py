"""Run order: lower priority first, FIFO within one priority."""

from __future__ import annotations

import pytest
from worker_support import gated

from engine import UsageError


def recorder():
    """A task function appending its label to ``order`` when it runs."""
    order: list[str] = []

    async def record(label):
        order.append(label)
        return label

    return record, order


async def _queue_behind_gate(worker, record, entries):
    wait_on, gate, entered = gated()
    blocker = await worker.add_task(wait_on)
    await entered.wait()
    ids = [
        await worker.add_task(record, label, priority=priority)
        for label, priority in entries
    ]
    return blocker, gate, ids


async def test_lower_priority_runs_first(make_worker):
    worker = await make_worker(max_workers=1)
    record, order = recorder()
    entries = [("p5", 5), ("p1", 1), ("p3", 3), ("p0", 0), ("p-2", -2)]
    blocker, gate, ids = await _queue_behind_gate(worker, record, entries)

    gate.set()
    await worker.wait_for_tasks([blocker, *ids])

    assert order == ["p-2", "p0", "p1", "p3", "p5"]


async def test_equal_priorities_run_in_order_of_arrival(make_worker):
    worker = await make_worker(max_workers=1)
    record, order = recorder()
    entries = [(f"t{i}", 0) for i in range(30)]
    blocker, gate, ids = await _queue_behind_gate(worker, record, entries)

    gate.set()
    await worker.wait_for_tasks([blocker, *ids])

    assert order == [f"t{i}" for i in range(30)]


async def test_mixed_priorities_sort_by_priority_then_arrival(make_worker):
    worker = await make_worker(max_workers=1)
    record, order = recorder()
    entries = [("a", 2), ("b", 1), ("c", 2), ("d", 1), ("e", 0), ("f", 2)]
    blocker, gate, ids = await _queue_behind_gate(worker, record, entries)

    gate.set()
    await worker.wait_for_tasks([blocker, *ids])

    assert order == ["e", "b", "d", "a", "c", "f"]


async def test_priority_recorded_in_task_info(make_worker):
    worker = await make_worker()
    record, _ = recorder()

    task_id = await worker.add_task(record, "x", priority=7)
    await worker.get_task_future(task_id)

    assert worker.get_task_info(task_id).priority == 7


async def test_add_tasks_keeps_priority_order(make_worker):
    worker = await make_worker(max_workers=1)
    record, order = recorder()
    wait_on, gate, entered = gated()
    blocker = await worker.add_task(wait_on)
    await entered.wait()

    ids = await worker.add_tasks(
        [
            {"task_func": record, "args": ["late"], "priority": 9},
            {"task_func": record, "args": ["early"], "priority": 1},
            {"task_func": record, "args": ["middle"], "priority": 5},
            {"task_func": record, "args": ["early2"], "priority": 1},
        ]
    )
    gate.set()
    await worker.wait_for_tasks([blocker, *ids])

    assert order == ["early", "early2", "middle", "late"]


@pytest.mark.parametrize("priority", ["1", 1.5, None, True])
async def test_add_task_rejects_non_int_priority(make_worker, priority):
    worker = await make_worker()
    record, _ = recorder()

    with pytest.raises(UsageError, match="priority"):
        await worker.add_task(record, "x", priority=priority)

    assert worker.get_all_tasks() == []
