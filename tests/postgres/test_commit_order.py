"""Positions become readable in commit order across writer processes."""

from __future__ import annotations

import asyncio

import pytest

from engine.store.postgres import PostgresEventStore

pytestmark = pytest.mark.postgres


async def _tail_by_position(
    store: PostgresEventStore, writers_done: asyncio.Event, seen: list[int]
) -> None:
    after = 0
    while True:
        finished = writers_done.is_set()
        batch = await store.read(after)
        seen.extend(event.position for event in batch)
        if batch:
            after = batch[-1].position
        elif finished:
            return


@pytest.mark.timeout(120)
async def test_tailing_reader_sees_every_event_once_in_order_with_four_writers(
    pg_store: PostgresEventStore, writers
):
    await writers.start(count=4, batches=300, max_batch=8)
    writers_done = asyncio.Event()
    seen: list[int] = []
    reader = asyncio.create_task(_tail_by_position(pg_store, writers_done, seen))

    writers.release()
    written = await writers.finish()
    writers_done.set()
    await reader

    logged = [event.position for event in await pg_store.read()]
    assert len(logged) == written
    assert seen == logged
