"""``GET /events``: live delivery, resume from the log, keep-alive, release."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing

from api_support import connect_and_drop, eventually, sse, terminal

from engine import AsyncTaskWorker, EventManager
from engine.api import task_event_stream
from engine.api.stream import READY


async def run_echo(worker: AsyncTaskWorker, n: int, group_id: str = "g") -> list[str]:
    ids = [
        await worker.add_task("echo", value=i, metadata={"group_id": group_id})
        for i in range(n)
    ]
    await worker.wait_for_tasks(ids, timeout=5)
    return ids


async def test_sse_sends_live_events_with_the_log_position_as_id(worker, live_server):
    async with (
        live_server(worker) as server,
        sse(server.url, "/events?group_id=g") as s,
    ):
        ids = await run_echo(worker, 2)
        received = await s.events_until(
            lambda e: terminal(e) and e["task_id"] == ids[-1]
        )

    positions = [event_id for event_id, _ in received]
    assert positions == [data["position"] for _, data in received]
    assert positions == sorted(set(positions))
    assert [d["type"] for _, d in received if d["task_id"] == ids[0]] == [
        "queued",
        "started",
        "completed",
    ]
    assert received[-1][1]["result"] == 1


async def test_last_event_id_gets_missed_events_from_the_log_then_live(
    sqlite_worker, live_server
):
    worker = sqlite_worker
    await run_echo(worker, 5)
    resume_after = 7
    stop = asyncio.Event()

    async def produce() -> None:
        while not stop.is_set():
            await run_echo(worker, 1)

    producer = asyncio.create_task(produce())
    headers = {"Last-Event-ID": str(resume_after)}
    async with live_server(worker) as server:
        async with sse(server.url, "/events", headers=headers) as s:
            first = await s.event()
            stop.set()
            await producer
            await run_echo(worker, 2)
            end = await worker.store.last_position()
            rest = await s.events_until(lambda e: e["position"] == end)

    received = [first, *rest]
    positions = [event_id for event_id, _ in received]
    assert positions == list(range(resume_after + 1, end + 1))
    log = await worker.store.read(after=resume_after)
    assert [(d["task_id"], d["version"]) for _, d in received] == [
        (e.task_id, e.version) for e in log
    ]


async def test_last_event_id_past_the_end_gives_the_live_stream(worker, live_server):
    headers = {"Last-Event-ID": "1000000"}
    async with live_server(worker) as server:
        async with sse(server.url, "/events", headers=headers) as s:
            ids = await run_echo(worker, 1)
            event_id, data = await s.event()

    assert data["task_id"] == ids[0]
    assert data["type"] == "queued"
    assert event_id == 1


async def test_last_event_id_as_query_parameter_resumes_too(worker, live_server):
    await run_echo(worker, 1)
    async with live_server(worker) as server:
        async with sse(server.url, "/events?last_event_id=1") as s:
            event_id, data = await s.event()

    assert (event_id, data["type"]) == (2, "started")


async def test_bad_last_event_id_is_400_with_a_sentence(client):
    for value in ("abc", "-1", "1.5", "1e3"):
        response = await client.get("/events", headers={"Last-Event-ID": value})

        assert response.status_code == 400, value
        detail = response.json()["detail"]
        assert detail["error_type"] == "invalid_last_event_id"
        assert "Last-Event-ID" in detail["message"]


async def test_idle_stream_gets_keep_alive_comments(worker, live_server):
    async with live_server(worker, sse_ping_interval=0.05) as server:
        async with sse(server.url, "/events") as s:
            block = await s.block()

    assert block[0].startswith(": ping")


async def test_task_id_filter_sends_only_that_task(worker, live_server):
    mine = "wanted-task"
    async with live_server(worker) as server:
        async with sse(server.url, f"/events?task_id={mine}") as s:
            await run_echo(worker, 2)
            await worker.add_task("echo", value="y", task_id=mine)
            received = await s.events_until(terminal)

    assert [d["task_id"] for _, d in received] == [mine] * 3


async def test_unknown_group_is_an_empty_live_stream(worker, live_server):
    async with live_server(worker, sse_ping_interval=0.05) as server:
        async with sse(server.url, "/events?group_id=nobody") as s:
            await run_echo(worker, 2)
            block = await s.block()

    assert block[0].startswith(": ping")


async def test_disconnect_releases_the_subscription_at_once(worker, live_server):
    manager = worker.events
    baseline = manager.subscriber_count
    async with live_server(worker) as server:
        async with sse(server.url, "/events"):
            assert manager.subscriber_count == baseline + 1
        await eventually(
            lambda: manager.subscriber_count == baseline, what="the release"
        )

    assert manager.subscriber_count == baseline


async def test_200_clients_dropping_abruptly_leave_no_subscription_behind(
    worker, live_server
):
    manager = worker.events
    baseline = manager.subscriber_count
    limit = asyncio.Semaphore(20)

    async def one(index: int) -> None:
        async with limit:
            await connect_and_drop(server.port, index)

    async with live_server(worker) as server:
        async with sse(server.url, "/events?group_id=g") as survivor:
            await asyncio.gather(*(one(i) for i in range(200)))
            ids = await run_echo(worker, 5)
            received = await survivor.events_until(
                lambda e: terminal(e) and e["task_id"] == ids[-1]
            )
        await eventually(
            lambda: manager.subscriber_count == baseline,
            timeout_s=20,
            what="every dropped subscription to be released",
        )

    by_task = {task_id: [] for task_id in ids}
    for _, data in received:
        by_task[data["task_id"]].append(data["type"])
    assert by_task == {t: ["queued", "started", "completed"] for t in ids}


async def test_overflowed_stream_catches_up_from_the_log_without_gaps(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'overflow.db'}"
    manager = EventManager(max_queue_size=4)
    async with AsyncTaskWorker(store=url, event_manager=manager) as worker:
        stream = task_event_stream(worker)
        async with aclosing(stream):
            assert await anext(stream) is READY
            ids = await run_echo(worker, 10)
            end = await worker.store.last_position()
            received = []
            while not received or received[-1]["position"] < end:
                received.append(await anext(stream))

    assert [m["position"] for m in received] == list(range(1, end + 1))
    assert received[-1]["task_id"] == ids[-1]


async def test_resumed_events_read_exactly_like_live_ones(sqlite_worker):
    worker = sqlite_worker
    live = task_event_stream(worker)
    async with aclosing(live):
        assert await anext(live) is READY
        slow = await worker.add_task("sleep", seconds=30, steps=300)
        ids = [
            await worker.add_task("sleep", seconds=0.2, steps=4),
            await worker.add_task("fail", message="Broken."),
            await worker.add_task("echo", value={"nested": [1, 2]}),
        ]
        await asyncio.gather(
            *(worker.get_task_future(i) for i in ids), return_exceptions=True
        )
        await worker.cancel_task(slow)
        end = await worker.store.last_position()
        live_messages = []
        while not live_messages or live_messages[-1]["position"] < end:
            live_messages.append(await anext(live))

    resumed = task_event_stream(worker, after=0)
    async with aclosing(resumed):
        assert await anext(resumed) is READY
        log_messages = [await anext(resumed) for _ in live_messages]

    def encoded(messages: list[dict]) -> list[str]:
        return [json.dumps(m, sort_keys=True, default=repr) for m in messages]

    assert encoded(log_messages) == encoded(live_messages)
    assert {m["type"] for m in log_messages} >= {"progress", "failed", "cancelled"}
