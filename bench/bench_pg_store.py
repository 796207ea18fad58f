"""Figures for the PostgreSQL store: append rate, replay rate, tail latency.

Run ``python bench/bench_pg_store.py [ADMIN_URL]`` (default
``postgresql://root@127.0.0.1:5432/postgres``). It creates a database named
``te_bench_<pid>``, drops it at the end, and prints figures; it asserts
nothing. The events-per-second target of the projection rebuild (150,000/s)
is compared with the store's part of it: fetching and decoding the log.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg
import sqlalchemy as sa

from engine.events import EventType, TaskEvent, utcnow
from engine.store.migrate import upgrade_database
from engine.store.pg_sql import APPEND as _APPEND
from engine.store.pg_sql import COMMIT_ORDER_LOCK_KEY
from engine.store.postgres import PostgresEventStore, asyncpg_dsn

ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"
REPLAY_EVENTS = 1_000_000
REBUILD_TARGET_PER_S = 150_000
_UNLOCKED_APPEND = _APPEND.replace(
    f"pg_advisory_xact_lock({COMMIT_ORDER_LOCK_KEY})", "1"
)


def _events(prefix: str, count: int) -> list[TaskEvent]:
    now = utcnow()
    return [
        TaskEvent.build(
            None,
            f"{prefix}-{i}",
            1,
            EventType.QUEUED,
            now,
            {"task_type": "noop", "priority": 0, "args": [i], "kwargs": {}},
        )
        for i in range(count)
    ]


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _timed(fn: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


async def bench_appends(store: PostgresEventStore) -> None:
    print("Appends (one writer, sequential batches; building events not timed)")
    for batch, batches in ((1, 2_000), (100, 300), (1_000, 60)):
        elapsed = 0.0
        for n in range(batches):
            events = _events(f"a{batch}-{n}", batch)
            started = time.perf_counter()
            await store.append(events)
            elapsed += time.perf_counter() - started
        print(
            f"  batch {batch:>5}: {batch * batches / elapsed:>9,.0f} rows/s "
            f"({elapsed / batches * 1e3:.2f} ms per batch)"
        )


async def _concurrent_rate(dsn: str, sql: str, batch: int, tag: str) -> float:
    connections = [await asyncpg.connect(dsn) for _ in range(4)]
    batches = 30_000 // (4 * batch)
    data = ['{"args":[1]}'] * batch

    async def writer(n: int, connection: asyncpg.Connection) -> None:
        for b in range(batches):
            ids = [f"{tag}-{n}-{b}-{i}" for i in range(batch)]
            await connection.fetchval(
                sql, ids, [1] * batch, ["queued"] * batch, [utcnow()] * batch, data
            )

    async def run() -> None:
        await asyncio.gather(*(writer(n, c) for n, c in enumerate(connections)))

    elapsed = await _timed(run)
    for connection in connections:
        await connection.close()
    return 4 * batches * batch / elapsed


async def bench_lock_cost(dsn: str) -> None:
    print("Commit-order lock cost (4 concurrent writers; best of 3 alternating)")
    for batch in (10, 100):
        rates: dict[str, list[float]] = {"with lock": [], "without lock": []}
        for attempt in range(3):
            for label, sql in (
                ("with lock", _APPEND),
                ("without lock", _UNLOCKED_APPEND),
            ):
                tag = f"{label.split()[0]}{batch}-{attempt}"
                rates[label].append(await _concurrent_rate(dsn, sql, batch, tag))
        locked, unlocked = max(rates["with lock"]), max(rates["without lock"])
        print(
            f"  batch {batch:>3}: {locked:>9,.0f} rows/s with lock, "
            f"{unlocked:>9,.0f} without ({1 - locked / unlocked:+.0%} cost)"
        )


async def _bulk_load(dsn: str, count: int) -> None:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    shapes = [
        ("queued", {"task_type": "noop", "priority": 0, "args": [1], "kwargs": {}}),
        ("started", {"attempt": 1, "node_id": "node-1"}),
        ("completed", {"result": 1, "duration_s": 0.001}),
    ]
    encoded = [(type_, json.dumps(data)) for type_, data in shapes]
    records = [
        (f"task-{i // 3}", i % 3 + 1, encoded[i % 3][0], at, encoded[i % 3][1])
        for i in range(count)
    ]
    connection = await asyncpg.connect(dsn)
    try:
        await connection.copy_records_to_table(
            "task_events",
            records=records,
            columns=["task_id", "version", "type", "at", "data"],
        )
        await connection.execute("VACUUM ANALYZE task_events")
    finally:
        await connection.close()


async def bench_replay(store: PostgresEventStore, dsn: str) -> None:
    after = await store.last_position()
    loaded = await _timed(lambda: _bulk_load(dsn, REPLAY_EVENTS))
    print(f"Replay ({REPLAY_EVENTS:,} events bulk-loaded by COPY in {loaded:.1f} s)")
    connection = await asyncpg.connect(dsn)
    raw_rows = 0

    async def fetch_only() -> None:
        nonlocal raw_rows
        position = after
        while rows := await connection.fetch(
            "SELECT position, task_id, version, type, at, data FROM task_events "
            "WHERE position > $1 ORDER BY position LIMIT 10000",
            position,
        ):
            raw_rows += len(rows)
            position = rows[-1][0]

    fetched = await _timed(fetch_only)
    await connection.close()
    decoded = fields = 0

    async def replay() -> None:
        nonlocal decoded
        async for batch in store.iter_batches(after, 10_000):
            decoded += len(batch)

    async def replay_fields() -> None:
        nonlocal fields
        async for batch in store.iter_fields(after, 10_000):
            fields += len(batch)

    elapsed = await _timed(replay)
    fields_elapsed = await _timed(replay_fields)
    rate = fields / fields_elapsed
    print(f"  fetch only (asyncpg rows):  {raw_rows / fetched:>9,.0f} events/s")
    print(f"  iter_batches to TaskEvent:  {decoded / elapsed:>9,.0f} events/s")
    print(f"  iter_fields to dicts:       {rate:>9,.0f} events/s (what a start folds)")
    share = REBUILD_TARGET_PER_S / rate
    print(
        f"  iter_fields' share of a {REBUILD_TARGET_PER_S:,}/s rebuild budget: "
        f"{share:.0%}"
    )


async def bench_tail_latency(store: PostgresEventStore, rounds: int = 400) -> None:
    await store.start_listening()
    after = await store.last_position()
    delivered: asyncio.Queue[float] = asyncio.Queue()

    async def consume() -> None:
        async for batch in store.tail(after, poll_interval_s=60):
            for _ in batch:
                delivered.put_nowait(time.perf_counter())

    consumer = asyncio.create_task(consume())
    latencies = []
    for n in range(rounds):
        started = time.perf_counter()
        await store.append(_events(f"tail-{n}", 1))
        latencies.append(await delivered.get() - started)
    consumer.cancel()
    latencies.sort()
    median = statistics.median(latencies) * 1e3
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1e3
    print("Tail latency (append to delivery through LISTEN/NOTIFY, one process)")
    print(f"  median {median:.2f} ms, p99 {p99:.2f} ms over {rounds} events")


async def bench_rebuild(url: str) -> None:
    """A worker's start on a log of finished tasks only: fetch, decode and
    fold every event into the TaskInfo projection (nothing to resume)."""
    from engine import AsyncTaskWorker

    await upgrade_database(url)
    await _bulk_load(asyncpg_dsn(url), REPLAY_EVENTS)
    worker = AsyncTaskWorker(store=url)
    started = time.perf_counter()
    await worker.start()
    elapsed = time.perf_counter() - started
    tasks = len(worker._journal.infos)
    await worker.stop()
    print(f"Rebuild ({REPLAY_EVENTS:,} events of {tasks:,} finished tasks)")
    print(
        f"  worker start, log folded into TaskInfo: "
        f"{REPLAY_EVENTS / elapsed:>9,.0f} events/s "
        f"({elapsed:.1f} s; target {REBUILD_TARGET_PER_S:,})"
    )


async def main(admin_url: str) -> None:
    global ADMIN_URL
    ADMIN_URL = admin_url
    name = f"te_bench_{os.getpid()}"
    url = sa.engine.make_url(ADMIN_URL).set(
        drivername="postgresql+asyncpg", database=name
    )
    url_text = url.render_as_string(hide_password=False)
    await _admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        await upgrade_database(url_text)
        store = PostgresEventStore(url_text)
        await store.open()
        try:
            await bench_appends(store)
            await bench_lock_cost(asyncpg_dsn(url_text))
            await bench_tail_latency(store)
            await bench_replay(store, asyncpg_dsn(url_text))
        finally:
            await store.close()
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    rebuild_url = url.set(database=f"{name}_rebuild")
    await _admin(f'CREATE DATABASE "{name}_rebuild" TEMPLATE template0')
    try:
        await bench_rebuild(rebuild_url.render_as_string(hide_password=False))
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}_rebuild" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "admin_url",
        nargs="?",
        default=ADMIN_URL,
        help="a PostgreSQL URL allowed to create databases (default: %(default)s)",
    )
    asyncio.run(main(parser.parse_args().admin_url))
