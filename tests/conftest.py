"""Fixtures shared by every test: the stores of the contract suite."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from engine.store import EventStore, MemoryEventStore
from engine.store.sqlite import SQLiteEventStore

IN_CI = os.environ.get("CI") == "true"

STORE_BACKENDS = ["memory", "sqlite", "postgresql"]


async def _open_store(backend: str, tmp_path, request) -> EventStore:
    if backend == "memory":
        return MemoryEventStore()
    if backend == "sqlite":
        return SQLiteEventStore(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")
    pg = request.getfixturevalue("postgres_url")
    from engine.store.postgres import PostgresEventStore

    return PostgresEventStore(pg, migrate=True)


@pytest.fixture(params=STORE_BACKENDS)
async def store(request, tmp_path) -> AsyncIterator[EventStore]:
    """An open, empty store of each backend in turn."""
    store = await _open_store(request.param, tmp_path, request)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
