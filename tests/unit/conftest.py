"""Fixtures of the worker tests: every test runs on the memory store and on
an SQLite log, since behaviour must be the same."""

from __future__ import annotations

import pytest

from engine import AsyncTaskWorker


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request, tmp_path):
    """None (the memory store) or an SQLite URL in this test's folder."""
    if request.param == "memory":
        return None
    return f"sqlite+aiosqlite:///{tmp_path}/log.db"


@pytest.fixture
async def make_worker(store_url):
    """Start workers on this test's store; stop them all afterwards."""
    workers = []

    async def make(**options):
        worker = AsyncTaskWorker(store=store_url, **options)
        await worker.start()
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        await worker.stop()
