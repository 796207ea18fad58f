"""Run and check the log's Alembic revisions from inside taskengine.

The synchronous helpers take an open SQLAlchemy connection (stores call them
through ``run_sync``); the coroutines open their own async engine from a
URL, for the command line. This module may import :mod:`engine.exceptions`,
:mod:`engine.store.schema`, :mod:`engine.store.urls` and the migrations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import migrations
from engine.exceptions import SchemaVersionError, StoreUnavailableError
from engine.store.schema import included_in, metadata
from engine.store.urls import async_url, safe_url

__all__ = [
    "MIGRATION_LOCK_KEY",
    "alembic_config",
    "current_revision",
    "database_revision",
    "downgrade_database",
    "ensure_schema",
    "head_revision",
    "schema_drift",
    "upgrade_database",
]

logger = logging.getLogger(__name__)

#: Key of the PostgreSQL advisory lock held while revisions are applied
#: (the first eight bytes of sha1("taskengine:migrate"), as a signed bigint).
MIGRATION_LOCK_KEY = 0x1D6F_0E3C_59A2_7B11

_T = TypeVar("_T")


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the installed revisions."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    """The newest revision this code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    return MigrationContext.configure(connection).get_current_revision()


def schema_drift(connection: Connection) -> list[Any]:
    """Differences between the database and :data:`engine.store.schema.metadata`.

    An empty list means the migrated schema is the one the code describes
    (what ``alembic check`` verifies).
    """
    include = included_in(connection.dialect.name)
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": include}
    )
    return list(compare_metadata(context, metadata))


def ensure_schema(connection: Connection, *, upgrade: bool, url: str) -> bool:
    """Upgrade to head when asked; refuse a database behind or ahead of us.

    On PostgreSQL the upgrade runs in one transaction under an advisory lock,
    so two processes starting at once apply each revision once: the second
    waits, then finds the database at head.

    Returns:
        True when this call applied revisions.

    Raises:
        SchemaVersionError: the schema is not at head and ``upgrade`` is
            false, or the database is at a revision this code does not know.
    """
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    current = current_revision(connection)
    if current == head:
        return False
    _refuse_unknown(script, current, head, url)
    if not upgrade:
        raise SchemaVersionError(
            f"The database at {safe_url(url)!r} is at schema revision "
            f"{current!r}, behind this code's {head!r}; run 'taskengine db "
            "upgrade --database URL' or open the store with migrate=True.",
            current=current,
            head=head,
        )
    if connection.dialect.name == "postgresql":
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
        )
        current = current_revision(connection)
        _refuse_unknown(script, current, head, url)
    applied = current != head
    if applied:
        _run_command(connection, url, command.upgrade, "head")
    connection.commit()
    if applied:
        logger.info(
            "Schema upgraded",
            extra={
                "action": "schema_upgraded",
                "from_revision": current,
                "to_revision": head,
            },
        )
    return applied


def _refuse_unknown(
    script: ScriptDirectory, current: str | None, head: str | None, url: str
) -> None:
    if current is None:
        return
    try:
        script.get_revision(current)
    except CommandError:
        pass
    else:
        return
    raise SchemaVersionError(
        f"The database at {safe_url(url)!r} is at schema revision {current!r}, "
        f"which this version of taskengine does not know (its newest is "
        f"{head!r}); upgrade taskengine.",
        current=current,
        head=head,
    )


def _run_command(
    connection: Connection, url: str, fn: Callable[..., None], revision: str
) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = connection
    fn(config, revision)


async def _with_connection(url: str, fn: Callable[[Connection], _T]) -> _T:
    engine = create_async_engine(async_url(url), poolclass=sa.pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(fn)
    except (sa.exc.DBAPIError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).rstrip(".")
        raise StoreUnavailableError(
            f"The database at {safe_url(url)!r} cannot be migrated: {reason}. "
            "Check the URL and that it holds a taskengine log (or nothing).",
            url=safe_url(url),
        ) from exc
    finally:
        await engine.dispose()


async def upgrade_database(url: str) -> bool:
    """Bring the database at ``url`` to the head revision (``db upgrade``).

    Returns:
        True when this call applied revisions, False when it was at head.

    Raises:
        SchemaVersionError: the database is ahead of this code.
    """

    def upgrade(connection: Connection) -> bool:
        return ensure_schema(connection, upgrade=True, url=url)

    return await _with_connection(url, upgrade)


async def downgrade_database(url: str, revision: str) -> None:
    """Undo revisions down to ``revision`` (``"base"`` removes the log)."""

    def downgrade(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"),
                {"key": MIGRATION_LOCK_KEY},
            )
        _run_command(connection, url, command.downgrade, revision)
        connection.commit()
        logger.info(
            "Schema downgraded",
            extra={"action": "schema_downgraded", "to_revision": revision},
        )

    await _with_connection(url, downgrade)


async def database_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (``db current``)."""
    return await _with_connection(url, current_revision)
