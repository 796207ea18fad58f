"""``GET /events`` of one cluster node carries the events another node adds.

Two workers on one PostgreSQL database are two nodes: each has its own
store, connections and bus, so node A's events reach node B's stream only
through the log, B's tail and B's bus.
"""

from __future__ import annotations

import asyncio

import pytest
from api_support import sse, terminal

from engine import AsyncTaskWorker

pytestmark = pytest.mark.postgres


async def test_event_added_on_one_node_reaches_another_nodes_sse_stream(
    postgres_url, live_server
):
    node_a = AsyncTaskWorker(max_workers=2, store=postgres_url, node_id="node-a")
    node_b = AsyncTaskWorker(max_workers=2, store=postgres_url, node_id="node-b")
    async with node_b, node_a:
        async with (
            live_server(node_b) as server,
            sse(server.url, "/events?group_id=across") as stream,
        ):
            task_id = await node_a.add_task(
                "echo", value=7, metadata={"group_id": "across"}
            )
            async with asyncio.timeout(10):
                received = await stream.events_until(
                    lambda e: terminal(e) and e["task_id"] == task_id
                )
        log = await node_a.history(task_id)

    assert [(p, d["task_id"], d["version"]) for p, d in received] == [
        (e.position, e.task_id, e.version) for e in log
    ]
    assert [d["type"] for _, d in received] == ["queued", "started", "completed"]
    assert all(d["position"] == p for p, d in received)
    assert received[-1][1]["result"] == 7
