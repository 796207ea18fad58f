"""Alembic environment: runs the log's revisions on SQLite or PostgreSQL.

Called by the ``alembic`` command, this builds an async engine from the URL
and runs the revisions through ``run_sync``. Called by taskengine itself, it
receives an open connection in ``config.attributes["connection"]`` and uses
it, so migrating never starts a second event loop.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from engine.constants import DATABASE_URL_ENV, DEFAULT_DATABASE_URL
from engine.store.schema import included_in, metadata
from engine.store.urls import async_url

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url")
    return async_url(url or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=included_in(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


def run() -> None:
    """Entry point Alembic calls for every command."""
    if context.is_offline_mode():
        context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async())


run()
