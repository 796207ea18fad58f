"""``PostgresEventStore.tail``: LISTEN wake-ups, fallback poll, reconnection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from engine.events import EventType, TaskEvent, utcnow
from engine.exceptions import ConcurrencyConflictError
from engine.store.postgres import PostgresEventStore, asyncpg_dsn

pytestmark = pytest.mark.postgres


def _events(prefix: str, count: int) -> list[TaskEvent]:
    return [
        TaskEvent.build(None, f"{prefix}{i}", 1, EventType.QUEUED, utcnow(), {})
        for i in range(count)
    ]


async def _collect(
    batches: AsyncIterator[list[TaskEvent]], into: list[int], until: int
) -> None:
    async for batch in batches:
        into.extend(event.position for event in batch)
        if into and into[-1] >= until:
            return


async def _listener_pid(url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await connection.fetchval(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() "
            "AND application_name = 'taskengine_listener'"
        )
    finally:
        await connection.close()


async def _terminate(url: str, pid: int) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        assert await connection.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await connection.close()


async def test_tail_yields_events_after_position_then_new_ones(
    pg_store: PostgresEventStore,
):
    old = await pg_store.append(_events("old", 3))
    seen: list[int] = []
    tail = pg_store.tail(old[0], poll_interval_s=60)

    first = await anext(tail)
    new = await pg_store.append(_events("new", 2))
    second = await anext(tail)
    await tail.aclose()

    seen = [e.position for e in first + second]
    assert seen == old[1:] + new


async def test_tail_is_woken_by_notify_from_another_store(
    pg_store: PostgresEventStore, postgres_url: str
):
    other = PostgresEventStore(postgres_url)
    await other.open()
    tail = pg_store.tail(0, poll_interval_s=60)
    waiting = asyncio.ensure_future(anext(tail))
    await pg_store.start_listening()

    positions = await other.append(_events("x", 4))

    batch = await asyncio.wait_for(waiting, 10)
    await tail.aclose()
    await other.close()
    assert [e.position for e in batch] == positions


async def test_tail_falls_back_to_polling_without_notify(
    pg_store: PostgresEventStore, postgres_url: str
):
    tail = pg_store.tail(0, poll_interval_s=0.05)
    waiting = asyncio.ensure_future(anext(tail))
    connection = await asyncpg.connect(asyncpg_dsn(postgres_url))
    await connection.execute(
        "INSERT INTO task_events (task_id, version, type, at, data) "
        "VALUES ('silent', 1, 'queued', now(), '{}')"
    )
    await connection.close()

    batch = await asyncio.wait_for(waiting, 10)
    await tail.aclose()
    assert [e.task_id for e in batch] == ["silent"]


async def test_tail_reconnects_after_listener_backend_is_terminated(
    pg_store: PostgresEventStore, postgres_url: str, actions
):
    seen: list[int] = []
    first = await pg_store.append(_events("a", 2))
    tail = pg_store.tail(0, poll_interval_s=60)
    await _collect(tail, seen, first[-1])
    lost = actions.next("listener_connection_lost")
    reconnected = actions.next("listener_reconnected")

    await _terminate(postgres_url, await _listener_pid(postgres_url))
    await asyncio.wait_for(lost, 10)
    during = await pg_store.append(_events("b", 3))
    record = await asyncio.wait_for(reconnected, 10)
    await asyncio.wait_for(_collect(tail, seen, during[-1]), 10)
    after = await pg_store.append(_events("c", 2))
    await asyncio.wait_for(_collect(tail, seen, after[-1]), 10)
    await tail.aclose()

    assert record.levelname == "WARNING"
    assert seen == first + during + after


async def test_tail_delivers_each_event_once_from_writer_processes(
    pg_store: PostgresEventStore, writers
):
    await writers.start(count=3, batches=100, max_batch=5)
    seen: list[int] = []
    tail = pg_store.tail(0, poll_interval_s=60, batch_size=50)
    await pg_store.start_listening()

    writers.release()
    await writers.finish()
    last = await pg_store.last_position()
    await asyncio.wait_for(_collect(tail, seen, last), 20)
    await tail.aclose()

    assert seen == [event.position for event in await pg_store.read()]


async def test_tail_ends_when_the_store_is_closed(postgres_url: str):
    store = PostgresEventStore(postgres_url)
    await store.open()
    tail = store.tail(0, poll_interval_s=60)
    waiting = asyncio.ensure_future(anext(tail))
    await store.start_listening()

    await store.close()

    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 10)


async def _tail_after_another_writer(
    store: PostgresEventStore, postgres_url: str, **options: Any
) -> tuple[PostgresEventStore, AsyncIterator[list[TaskEvent]], list[TaskEvent]]:
    """Another writer's store with one event appended, and a tail of
    ``store`` that yielded it (so it runs: later appends count as after its
    start); the tail's first batch."""
    other = PostgresEventStore(postgres_url)
    await other.open()
    await other.append(_events("before", 1))
    tail = store.tail(0, **options)
    first = await asyncio.wait_for(anext(tail), 10)
    return other, tail, first


async def test_tail_skipping_own_events_yields_only_other_writers(
    pg_store: PostgresEventStore, postgres_url: str
):
    other, tail, _ = await _tail_after_another_writer(
        pg_store, postgres_url, poll_interval_s=60, skip_own=True
    )

    await pg_store.append(_events("own", 3))
    theirs = await other.append(_events("theirs", 2))

    batch = await asyncio.wait_for(anext(tail), 10)
    await tail.aclose()
    await other.close()
    assert [e.position for e in batch] == theirs


async def test_on_runnable_reports_other_stores_queued_appends_only(
    pg_store: PostgresEventStore, postgres_url: str
):
    other = PostgresEventStore(postgres_url)
    await other.open()
    await pg_store.start_listening()
    calls: asyncio.Queue[None] = asyncio.Queue()
    await pg_store.on_runnable(lambda: calls.put_nowait(None))

    await pg_store.append(_events("own", 2))
    await other.append(_events("theirs", 2))
    await asyncio.wait_for(calls.get(), 10)
    await asyncio.sleep(0.1)

    await other.close()
    assert calls.empty()


async def test_tail_reusing_own_events_yields_the_written_objects_in_log_order(
    pg_store: PostgresEventStore, postgres_url: str
):
    other, tail, first = await _tail_after_another_writer(
        pg_store, postgres_url, poll_interval_s=0.05, reuse_own=True
    )

    own = _events("own", 3)
    own_positions = await pg_store.append(own)
    theirs_positions = await other.append(_events("theirs", 2))
    seen = []
    while len(seen) < 5:
        seen.extend(await asyncio.wait_for(anext(tail), 10))
    await tail.aclose()
    await other.close()

    assert [e.task_id for e in first] == ["before0"]
    assert [e.position for e in seen] == own_positions + theirs_positions
    assert all(a is b for a, b in zip(seen[:3], own, strict=True))
    assert [e.position for e in own] == own_positions
    assert [e.task_id for e in seen[3:]] == ["theirs0", "theirs1"]
    assert pg_store._held is None  # released with the tail


class _CountingStore(PostgresEventStore):
    """Counts the tail's reads of the log (our own method, not the driver)."""

    reads = 0

    async def _tail_read(self, after: int, limit: int) -> list[Any] | None:
        self.reads += 1
        return await super()._tail_read(after, limit)


async def test_tail_hands_on_own_events_without_reading_them_back(postgres_url: str):
    store = _CountingStore(postgres_url)
    await store.open()
    other = PostgresEventStore(postgres_url)
    await other.open()
    try:
        tail = store.tail(0, poll_interval_s=5.0, reuse_own=True)
        starting = asyncio.ensure_future(anext(tail))
        await other.append(_events("first", 1))
        assert [e.task_id for e in await asyncio.wait_for(starting, 10)] == ["first0"]
        reads_before = store.reads

        own = _events("own", 40)
        positions = []
        for start in range(0, 40, 10):  # four commits, each notified
            positions += await store.append(own[start : start + 10])
        seen: list[TaskEvent] = []
        while len(seen) < 40:
            seen.extend(await asyncio.wait_for(anext(tail), 10))
        assert store.reads == reads_before  # nothing read back
        assert all(a is b for a, b in zip(seen, own, strict=True))
        assert [e.position for e in seen] == positions

        # Another writer's events between ours are read, in order.
        mine_before = await store.append(_events("mine", 2))
        theirs = await other.append(_events("theirs", 2))
        mine_after = await store.append(_events("later", 2))
        seen = []
        while len(seen) < 6:
            seen.extend(await asyncio.wait_for(anext(tail), 10))
        assert [e.position for e in seen] == mine_before + theirs + mine_after
        assert [e.task_id for e in seen] == [
            "mine0", "mine1", "theirs0", "theirs1", "later0", "later1"
        ]  # fmt: skip
        assert store.reads > reads_before

        # A refused insert between two of ours leaves a gap in the positions
        # (its identity values are spent): the tail passes it.
        first = await store.append(_events("gap-a", 1))
        with pytest.raises(ConcurrencyConflictError):
            await other.append(_events("gap-a", 1))  # version 1 again
        second = await store.append(_events("gap-b", 1))
        seen = []
        while len(seen) < 2:
            seen.extend(await asyncio.wait_for(anext(tail), 10))
        assert second[0] > first[0] + 1  # the gap
        assert [e.position for e in seen] == first + second
        await tail.aclose()
    finally:
        await other.close()
        await store.close()
