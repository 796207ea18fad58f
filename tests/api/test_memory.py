"""The served app's memory returns to its baseline after abusive clients.

Measured with :mod:`tracemalloc` on the app served in this process: tracing
starts at the baseline, so what it still reports at the end is memory
allocated meanwhile and still held. The worker and its bus are warmed up
first (imports, first connections, the bus's bounded caches), and at the end
the bus's clock is moved past ``result_ttl`` so that its recent-events and
processed-id caches, which the phases legitimately refilled with new
objects, expire. What may remain is the log and projection of the tasks run
during the test (a few kilobytes each) and allocator noise; leaking the
never-read queue (10,000 events, several MiB) or the state of 200 dropped
connections (tens of kilobytes each in uvicorn, h11 and the stream) would
exceed the tolerance many times over.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Iterator

import pytest
from api_support import connect_and_drop, eventually, sse, terminal

from engine import AsyncTaskWorker, EventManager

pytestmark = pytest.mark.slow

STALLED_EVENTS = 100_000
DROPPED_CLIENTS = 200
ROUNDS = 20
TOLERANCE_BYTES = 256 * 1024


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def traced() -> Iterator[None]:
    """Trace allocations during the test only."""
    try:
        yield
    finally:
        tracemalloc.stop()


def noise(manager: EventManager, start: int, n: int) -> None:
    """Publish ``n`` fresh events outside the streamed group."""
    for position in range(start, start + n):
        data = {"position": None, "type": "noise", "seq": position}
        manager.publish_event(f"noise-{position}", "noise", data)


async def echo_round(worker: AsyncTaskWorker, value: int) -> str:
    task_id = await worker.add_task("echo", value=value, metadata={"group_id": "g"})
    await worker.wait_for_tasks([task_id], timeout=5)
    return task_id


async def drop_clients(port: int) -> None:
    limit = asyncio.Semaphore(20)

    async def one(index: int) -> None:
        async with limit:
            await connect_and_drop(port, index)

    await asyncio.gather(*(one(i) for i in range(DROPPED_CLIENTS)))


async def test_memory_returns_to_baseline_after_dropped_clients_and_stalled_reader(
    live_server, traced
):
    clock = Clock()
    manager = EventManager(clock=clock)
    worker = AsyncTaskWorker(max_workers=2, event_manager=manager)
    async with (
        worker,
        live_server(worker) as server,
        sse(server.url, "/events?group_id=g") as survivor,
    ):
        await echo_round(worker, -1)
        await drop_clients(server.port)
        noise(manager, 0, 20_000)
        await eventually(lambda: manager.subscriber_count == 1, timeout_s=20)
        await survivor.events_until(terminal)
        gc.collect()
        tracemalloc.start()

        await drop_clients(server.port)
        await eventually(lambda: manager.subscriber_count == 1, timeout_s=20)
        _, stalled = manager.subscribe()
        ids = []
        for round_ in range(ROUNDS):
            noise(manager, 20_000 + round_ * 5_000, STALLED_EVENTS // ROUNDS)
            ids.append(await echo_round(worker, round_))
        received = await survivor.events_until(
            lambda e: terminal(e) and e["task_id"] == ids[-1]
        )
        # The test's own copy of the stream is not the server's memory.
        by_task: dict[str, list[str]] = {task_id: [] for task_id in ids}
        for _, data in received:
            by_task[data["task_id"]].append(data["type"])
        del received, data
        stalled_size, stalled_dropped = stalled.qsize(), stalled.dropped
        del stalled
        clock.now_s += manager.result_ttl + 1
        manager.prune()
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()

    assert stalled_size == manager.max_queue_size + 1
    assert stalled_dropped == STALLED_EVENTS + 3 * ROUNDS - manager.max_queue_size
    assert manager.subscriber_count == 0
    assert peak > 10 * TOLERANCE_BYTES
    assert held < TOLERANCE_BYTES, f"{held:,} bytes still held (peak {peak:,})"
    assert by_task == {t: ["queued", "started", "completed"] for t in ids}
