"""Each node's bus carries the whole log in position order, whichever node
wrote an event (so every task's events arrive in version order)."""

from __future__ import annotations

import asyncio

import pytest

from engine import AsyncTaskWorker, task
from engine.bus import EventManager

pytestmark = pytest.mark.postgres


@task("bus_order_work")
async def bus_order_work(n):
    await asyncio.sleep(0)
    return n


async def test_a_nodes_bus_sees_every_event_in_position_order(postgres_url):
    node_a = AsyncTaskWorker(max_workers=4, store=postgres_url, node_id="order-a")
    node_b = AsyncTaskWorker(max_workers=4, store=postgres_url, node_id="order-b")
    async with node_b, node_a:
        _, queue = node_a.events.subscribe()
        ids = [await node_a.add_task("bus_order_work", n) for n in range(150)]
        await node_b.add_tasks(
            [{"task_type": "bus_order_work", "args": [n]} for n in range(150)]
        )
        waiting = set(ids)
        received = []
        async with asyncio.timeout(30):
            while waiting or len({e["task_id"] for e in received}) < 300:
                event = await queue.get()
                received.append(event)
                if event["type"] in ("completed", "failed", "cancelled"):
                    waiting.discard(event["task_id"])
        log = await node_a.store.read(0)

    positions = [e["position"] for e in received]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    assert positions == [e.position for e in log][: len(positions)]


@task("watched_double")
async def watched_double(x):
    return x * 2


@task("watched_hold")
async def watched_hold(release_after):
    await asyncio.sleep(release_after)


async def test_a_future_taken_before_this_node_claims_the_task_resolves(
    postgres_url,
):
    # The runner has its own bus, which its tail feeds after folding: an
    # event there means the runner's projection holds it.
    runner_bus = EventManager()
    producer = AsyncTaskWorker(max_workers=1, store=postgres_url, node_id="w-p")
    runner = AsyncTaskWorker(
        max_workers=1, store=postgres_url, node_id="w-r", event_manager=runner_bus
    )
    await producer.start()
    await runner.start()
    _, seen = runner_bus.subscribe()
    try:
        await producer.cluster.stop_claiming()  # the runner runs everything
        await producer.add_task("watched_hold", 0.3)  # holds the runner's slot
        task_id = await producer.add_task("watched_double", 21)
        while (await asyncio.wait_for(seen.get(), 10))["task_id"] != task_id:
            pass
        pending_there = runner.get_task_info(task_id).status
        watched = runner.get_task_future(task_id)

        result = await asyncio.wait_for(watched, 10)
    finally:
        await runner.stop()
        await producer.stop()

    assert pending_there == "pending"
    assert result == 42
    assert runner.get_task_info(task_id).status == "completed"
