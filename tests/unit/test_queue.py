"""TaskQueue: lower priority first, FIFO within one priority."""

from __future__ import annotations

import asyncio

from engine.queue import TaskQueue


async def test_get_returns_lower_priority_first():
    queue = TaskQueue()
    for priority, task_id in [(5, "a"), (1, "b"), (3, "c"), (-1, "d")]:
        queue.put(priority, task_id)

    order = [await queue.get() for _ in range(4)]

    assert order == ["d", "b", "c", "a"]


async def test_get_is_fifo_within_one_priority():
    queue = TaskQueue()
    for i in range(100):
        queue.put(0, f"t{i}")

    order = [await queue.get() for _ in range(100)]

    assert order == [f"t{i}" for i in range(100)]


async def test_len_counts_queued_ids():
    queue = TaskQueue()
    queue.put(0, "a")
    queue.put(0, "b")

    await queue.get()

    assert len(queue) == 1


async def test_get_waits_until_put():
    queue = TaskQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    waiting = not getter.done()

    queue.put(0, "late")

    assert waiting
    assert await getter == "late"


async def test_each_put_wakes_one_waiting_getter():
    queue = TaskQueue()
    getters = [asyncio.ensure_future(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)

    for task_id in ["x", "y", "z"]:
        queue.put(0, task_id)
    results = await asyncio.gather(*getters)

    assert sorted(results) == ["x", "y", "z"]


async def test_cancelled_getter_passes_its_wake_up_on():
    queue = TaskQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)

    queue.put(0, "only")
    first.cancel()
    result = await asyncio.wait_for(second, 5)

    assert result == "only"
    assert first.cancelled()


async def test_drain_returns_ids_in_run_order_and_empties_queue():
    queue = TaskQueue()
    for priority, task_id in [(2, "a"), (1, "b"), (2, "c"), (0, "d")]:
        queue.put(priority, task_id)

    drained = queue.drain()

    assert drained == ["d", "b", "a", "c"]
    assert len(queue) == 0


async def test_mixed_priorities_come_out_sorted_and_fifo_within_each():
    import random

    rng = random.Random(7)
    queue = TaskQueue()
    entries = [(rng.randrange(-3, 4), f"t{n}") for n in range(500)]
    taken = []
    for index, (priority, task_id) in enumerate(entries):
        queue.put(priority, task_id)
        if index % 7 == 0:  # takes interleaved with puts
            taken.append(await queue.get())
    while len(queue):
        taken.append(await queue.get())

    assert sorted(taken) == sorted(task_id for _, task_id in entries)
    rest = taken[len(entries) // 7 + 1 :]
    priority_of = dict((task_id, p) for p, task_id in entries)
    keys = [(priority_of[t], int(t[1:])) for t in rest]
    assert keys == sorted(keys)
