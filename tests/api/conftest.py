"""Fixtures of the HTTP API tests: a real worker, an app, and a real server.

``httpx.ASGITransport`` buffers whole responses, so streams (SSE) are read
from a uvicorn server started in the test's own event loop on a free port
of 127.0.0.1 (``api_support.LiveServer``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from api_support import LiveServer

import engine.examples  # noqa: F401 - registers the demonstration task types
from engine import AsyncTaskWorker
from engine.serve import create_app

TOKEN = "s3cret-token"


@contextlib.asynccontextmanager
async def _running(store: str | None = None) -> AsyncIterator[AsyncTaskWorker]:
    started = AsyncTaskWorker(max_workers=4, store=store)
    await started.start()
    try:
        yield started
    finally:
        await started.stop(timeout=0.2)


@pytest.fixture
async def worker() -> AsyncIterator[AsyncTaskWorker]:
    """A started worker on the memory store."""
    async with _running() as started:
        yield started


@pytest.fixture
async def sqlite_worker(tmp_path) -> AsyncIterator[AsyncTaskWorker]:
    """A started worker on a SQLite store in the test's directory."""
    async with _running(f"sqlite+aiosqlite:///{tmp_path / 'api.db'}") as started:
        yield started


@pytest.fixture
async def client(worker: AsyncTaskWorker) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in process."""
    app = create_app(worker, manage_worker=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
def live_server() -> Callable[..., LiveServer]:
    """Make a :class:`LiveServer` for a worker: ``async with live_server(w)``."""

    def make(worker: AsyncTaskWorker, **options: Any) -> LiveServer:
        options.setdefault("sse_ping_interval", 15.0)
        return LiveServer(create_app(worker, manage_worker=False, **options))

    return make
