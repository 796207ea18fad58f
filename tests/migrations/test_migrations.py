"""The log's Alembic revisions on PostgreSQL and SQLite: upgrade, drift,
round trip, concurrent upgrades and refusal of unknown revisions."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from engine.exceptions import SchemaVersionError
from engine.store.migrate import (
    database_revision,
    downgrade_database,
    head_revision,
    schema_drift,
    upgrade_database,
)
from engine.store.postgres import PostgresEventStore, asyncpg_dsn
from engine.store.urls import async_url

REPO_ROOT = Path(__file__).resolve().parents[2]

UPGRADER = """
import asyncio, sys
from engine.store.migrate import upgrade_database
print("ready", flush=True)
sys.stdin.readline()
print(asyncio.run(upgrade_database(sys.argv[1])), flush=True)
"""


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request, tmp_path) -> str:
    """An empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    return request.getfixturevalue("empty_postgres_url")


async def _drift(url: str) -> list:
    engine = create_async_engine(async_url(url), poolclass=sa.pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(schema_drift)
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(async_url(url), poolclass=sa.pool.NullPool)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(
                lambda sync: sa.inspect(sync).get_table_names()
            )
    finally:
        await engine.dispose()
    return set(names) - {"sqlite_sequence"}


async def _set_revision(url: str, revision: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(
            "UPDATE alembic_version SET version_num = $1", revision
        )
    finally:
        await connection.close()


async def test_upgrade_empty_database_reaches_head_without_drift(empty_url):
    applied = await upgrade_database(empty_url)

    assert applied is True
    assert await database_revision(empty_url) == head_revision()
    assert await _drift(empty_url) == []


async def test_upgrade_at_head_applies_nothing(empty_url):
    await upgrade_database(empty_url)

    assert await upgrade_database(empty_url) is False


async def test_downgrade_to_base_and_upgrade_again_round_trips(empty_url):
    await upgrade_database(empty_url)

    await downgrade_database(empty_url, "base")
    tables_at_base = await _tables(empty_url)
    await upgrade_database(empty_url)

    assert tables_at_base <= {"alembic_version"}
    assert await database_revision(empty_url) == head_revision()
    assert await _drift(empty_url) == []


@pytest.mark.postgres
@pytest.mark.timeout(90)
async def test_processes_upgrading_at_once_apply_the_revisions_once(
    empty_postgres_url,
):
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            UPGRADER,
            empty_postgres_url,
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for process in processes:
        assert await process.stdout.readline() == b"ready\n"

    outcomes = await asyncio.gather(*(p.communicate(b"go\n") for p in processes))

    assert [p.returncode for p in processes] == [0, 0, 0]
    assert sorted(out.strip() for out, _ in outcomes) == [b"False", b"False", b"True"]
    assert await database_revision(empty_postgres_url) == head_revision()


@pytest.mark.postgres
async def test_store_refuses_database_behind_unless_asked_to_migrate(
    empty_postgres_url,
):
    with pytest.raises(SchemaVersionError, match="run 'taskengine db upgrade"):
        await PostgresEventStore(empty_postgres_url).open()

    store = PostgresEventStore(empty_postgres_url, migrate=True)
    await store.open()
    await store.close()
    assert await database_revision(empty_postgres_url) == head_revision()


@pytest.mark.postgres
@pytest.mark.parametrize("migrate", [False, True])
async def test_store_refuses_database_ahead_of_the_code(postgres_url, migrate):
    await _set_revision(postgres_url, "9999_from_the_future")

    with pytest.raises(SchemaVersionError, match="upgrade taskengine") as caught:
        await PostgresEventStore(postgres_url, migrate=migrate).open()

    assert caught.value.current == "9999_from_the_future"
    assert caught.value.head == head_revision()


async def test_sqlite_database_ahead_of_the_code_is_refused(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    await upgrade_database(url)
    engine = create_async_engine(url, poolclass=sa.pool.NullPool)
    async with engine.begin() as connection:
        await connection.execute(sa.text("UPDATE alembic_version SET version_num='z'"))
    await engine.dispose()

    with pytest.raises(SchemaVersionError, match="does not know"):
        await upgrade_database(url)
