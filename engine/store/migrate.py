"""Run and check the log's Alembic revisions from inside taskengine."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

import migrations
from engine.exceptions import SchemaVersionError

__all__ = ["alembic_config", "current_revision", "ensure_schema", "head_revision"]

logger = logging.getLogger(__name__)


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


def ensure_schema(connection: Connection, *, upgrade: bool, url: str) -> None:
    """Upgrade to head when asked; refuse a database behind or ahead of us.

    Raises:
        SchemaVersionError: the schema is not at head and ``upgrade`` is
            false, or the database is at a revision this code does not know.
    """
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    current = current_revision(connection)
    if current == head:
        return
    if current is not None and script.get_revision(current) is None:
        raise SchemaVersionError(
            f"The database at {url!r} is at schema revision {current!r}, which "
            f"this version of taskengine does not know (its newest is {head!r}); "
            "upgrade taskengine.",
            current=current,
            head=head,
        )
    if not upgrade:
        raise SchemaVersionError(
            f"The database at {url!r} is at schema revision {current!r}, behind "
            f"this code's {head!r}; run 'taskengine db upgrade --database URL' "
            "or open the store with migrate=True.",
            current=current,
            head=head,
        )
    config = alembic_config(url)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    connection.commit()
    logger.info(
        "Schema upgraded",
        extra={
            "action": "schema_upgraded",
            "from_revision": current,
            "to_revision": head,
        },
    )
