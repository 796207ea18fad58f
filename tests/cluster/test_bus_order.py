"""Each node's bus carries the whole log in position order, whichever node
wrote an event (so every task's events arrive in version order)."""

from __future__ import annotations

import asyncio

import pytest

from engine import AsyncTaskWorker, task

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
