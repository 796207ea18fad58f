"""``WS /ws/tasks/{group_id}``: the same events as SSE over a WebSocket."""

from __future__ import annotations

import json

import pytest
from api_support import eventually, sse, terminal
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


async def receive_until_terminal(websocket, task_id: str) -> list[dict]:
    received = []
    while True:
        message = json.loads(await websocket.recv())
        received.append(message)
        if terminal(message) and message["task_id"] == task_id:
            return received


async def test_websocket_sends_the_same_events_as_sse(worker, live_server):
    async with live_server(worker) as server:
        ws_url = server.url.replace("http", "ws") + "/ws/tasks/g"
        async with (
            connect(ws_url) as websocket,
            sse(server.url, "/events?group_id=g") as stream,
        ):
            hello = json.loads(await websocket.recv())
            task_id = await worker.add_task(
                "sleep", seconds=0.1, steps=2, metadata={"group_id": "g"}
            )
            over_ws = await receive_until_terminal(websocket, task_id)
            over_sse = await stream.events_until(terminal)

    assert hello == {"type": "subscribed", "group_id": "g"}
    assert over_ws == [data for _, data in over_sse]
    assert [m["type"] for m in over_ws][0] == "queued"
    assert over_ws[-1]["type"] == "completed"


async def test_websocket_resumes_after_last_event_id(worker, live_server):
    task_id = await worker.add_task("echo", value=1, metadata={"group_id": "g"})
    await worker.wait_for_tasks([task_id], timeout=5)
    async with live_server(worker) as server:
        url = server.url.replace("http", "ws") + "/ws/tasks/g?last_event_id=1"
        async with connect(url) as websocket:
            await websocket.recv()
            received = await receive_until_terminal(websocket, task_id)

    assert [m["position"] for m in received] == [2, 3]


async def test_websocket_bad_last_event_id_is_refused_with_400(worker, live_server):
    async with live_server(worker) as server:
        url = server.url.replace("http", "ws") + "/ws/tasks/g?last_event_id=x"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass

    response = refused.value.response
    assert response.status_code == 400
    detail = json.loads(response.body)["detail"]
    assert detail["error_type"] == "invalid_last_event_id"


async def test_websocket_disconnect_releases_the_subscription(worker, live_server):
    manager = worker.events
    baseline = manager.subscriber_count
    async with live_server(worker) as server:
        url = server.url.replace("http", "ws") + "/ws/tasks/g"
        async with connect(url) as websocket:
            await websocket.recv()
            assert manager.subscriber_count == baseline + 1
        await eventually(lambda: manager.subscriber_count == baseline)

    assert manager.subscriber_count == baseline
