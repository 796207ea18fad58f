"""Fixtures shared by every test: the stores of the contract suite."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
import sqlalchemy as sa

from engine.store import EventStore, MemoryEventStore
from engine.store.sqlite import SQLiteEventStore

IN_CI = os.environ.get("CI") == "true"

STORE_BACKENDS = ["memory", "sqlite", "postgresql"]

T = TypeVar("T")


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


# PostgreSQL: a template database migrated to head once per session, and a
# database cloned from it for every test. Only databases named with this
# session's prefix are ever created or dropped.

POSTGRES_ADMIN_URL = os.environ.get(
    "TASKENGINE_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/postgres"
)
POSTGRES_PREFIX = f"te_test_{os.getpid()}_"


def run_in_thread(coro_fn: Callable[..., Awaitable[T]], *args: object) -> T:
    """Run a coroutine to completion on a fresh loop in a helper thread.

    Sync fixtures need this: they may be requested from inside a running loop.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro_fn(*args)).result()


class PostgresServer:
    """Creates and drops this session's databases on the test server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._names = itertools.count()

    def url_for(self, database: str) -> str:
        """The store URL of ``database`` on this server."""
        parsed = sa.engine.make_url(self.admin_url)
        parsed = parsed.set(drivername="postgresql+asyncpg", database=database)
        return parsed.render_as_string(hide_password=False)

    async def _admin(self, sql: str) -> None:
        connection = await asyncpg.connect(self.admin_url, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    def create(self, template: str = "template0", suffix: str | None = None) -> str:
        """Create an own database from ``template``; return its name."""
        name = f"{POSTGRES_PREFIX}{suffix or next(self._names)}"
        run_in_thread(self._admin, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop(self, name: str) -> None:
        """Drop a database this session created, closing its connections."""
        assert name.startswith(POSTGRES_PREFIX), name
        run_in_thread(self._admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The test server; unreachable means skip locally and fail under CI."""
    server = PostgresServer(POSTGRES_ADMIN_URL)
    try:
        run_in_thread(server._admin, "SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at {POSTGRES_ADMIN_URL!r} is unreachable: {exc!r}."
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return server


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> Iterator[str]:
    """A database migrated to head, cloned by :func:`postgres_url`."""
    from engine.store.migrate import upgrade_database

    name = postgres_server.create(suffix="template")
    try:
        run_in_thread(upgrade_database, postgres_server.url_for(name))
        yield name
    finally:
        postgres_server.drop(name)


@pytest.fixture
def postgres_url(
    postgres_server: PostgresServer, postgres_template: str
) -> Iterator[str]:
    """The URL of a fresh database at the head revision, dropped afterwards."""
    name = postgres_server.create(template=postgres_template)
    try:
        yield postgres_server.url_for(name)
    finally:
        postgres_server.drop(name)


@pytest.fixture
def empty_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh database without any schema, dropped afterwards."""
    name = postgres_server.create()
    try:
        yield postgres_server.url_for(name)
    finally:
        postgres_server.drop(name)


# This folder is on sys.path (it is not a package), so tests/migrations would
# be found as a namespace package and hide the real ``migrations`` package,
# which the editable install's finder only offers after sys.path is searched.
# A regular package anywhere on sys.path wins, so the repository root goes in.
sys.path.append(str(Path(__file__).resolve().parents[1]))
