"""The SQLite store: the embedded default, one file, no server.

Appends run on the event loop's thread through a dedicated stdlib ``sqlite3``
connection managed by SQLAlchemy's synchronous engine; reads go through
SQLAlchemy's async engine on aiosqlite. The split is measured, not taste: in
WAL mode with ``synchronous=NORMAL`` an insert and its commit take about 5 us
in place, 27 us through SQLAlchemy Core, and about 490 us through the async
engine, whose two thread hops per statement would cap sequential
``add_task`` calls near 2,000 per second. Reads may be large (replay,
history), so they stay off the loop.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import functools
import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from engine.constants import EVENTS_TABLE
from engine.events import (
    EventType,
    TaskEvent,
    encode_payload,
    json_text,
    parse_payload,
)
from engine.exceptions import (
    ConcurrencyConflictError,
    StoreError,
    StoreUnavailableError,
    UsageError,
)
from engine.store.base import EventStore, collector_paused

__all__ = ["SQLiteEventStore", "sqlite_path"]

logger = logging.getLogger(__name__)

_INSERT = (
    f"INSERT INTO {EVENTS_TABLE} (task_id, version, type, at, data) "
    "VALUES (?, ?, ?, ?, ?)"
)
# Batches up to this size go in one multi-row INSERT; its text is cached per
# row count, and sqlite3 keeps 128 prepared statements by default.
_ONE_STATEMENT_ROWS = 32


@functools.cache
def _insert_rows(count: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?)"] * count)
    return (
        f"INSERT INTO {EVENTS_TABLE} (task_id, version, type, at, data) VALUES {values}"
    )


_SELECT = f"SELECT position, task_id, version, type, at, data FROM {EVENTS_TABLE}"


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite`` URL, or None for an in-memory database."""
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


_dumps = json_text


def _flat_json(data: dict[str, Any]) -> str | None:
    """JSON of a flat payload of plain values, or None when the codec is
    needed (the common started, progress and failed payloads are flat)."""
    for key, value in data.items():
        kind = type(value)
        if kind is str:
            if not value.isascii() or "\x00" in value:
                return None
        elif kind is float:
            if value != value or value in (_INF, -_INF):
                return None
        elif not (kind is int or kind is bool or value is None):
            return None
        if not key.isascii() or key == "$te" or "\x00" in key:
            return None
    return _dumps(data)


_INF = float("inf")


def encode_row(event: TaskEvent) -> tuple[str, int, str, str, str]:
    """The SQL parameters of one event (payload through the log's codec)."""
    data = _flat_json(event.data)
    if data is None:
        data = _dumps(encode_payload(event.data, "event data"))
    return (
        event.task_id,
        event.version,
        event.type.value,
        event.at.isoformat(),
        data,
    )


def decode_row(row: Sequence[Any]) -> TaskEvent:
    """Build a :class:`TaskEvent` from a row of ``_SELECT``."""
    position, task_id, version, type_, at, data = row
    return TaskEvent.build(
        position,
        task_id,
        version,
        EventType(type_),
        dt.datetime.fromisoformat(at),
        parse_payload(data),
    )


class SQLiteEventStore(EventStore):
    """An :class:`EventStore` in one SQLite file (WAL mode).

    Args:
        url: ``sqlite+aiosqlite:///path.db`` (``sqlite:///`` also accepted).
        migrate: bring the schema to the current revision on open.
        exclusive: hold a lock file so that a second worker on the same file
            is refused; read-only tools open with ``exclusive=False``.
        synchronous: SQLite's ``synchronous`` setting. ``NORMAL`` keeps every
            commit across a process crash; ``FULL`` also across power loss.
    """

    def __init__(
        self,
        url: str,
        *,
        migrate: bool = True,
        exclusive: bool = True,
        synchronous: str = "NORMAL",
    ) -> None:
        self.url = url
        self._path = sqlite_path(url)
        if self._path is None:
            raise UsageError(
                f"The SQLite store needs a file, not {url!r}; for a throw-away "
                "log use the memory store (store=None)."
            )
        self._migrate = migrate
        self._exclusive = exclusive
        self._synchronous = synchronous
        self._writer: sqlite3.Connection | None = None
        self._sync_engine: sa.Engine | None = None
        self._reader: AsyncEngine | None = None
        self._lock_file: IO[str] | None = None

    @property
    def path(self) -> Path:
        """The database file."""
        assert self._path is not None
        return self._path

    async def open(self) -> None:
        if self._writer is not None:
            return
        try:
            self._open()
        except (OSError, sqlite3.Error, sa.exc.DBAPIError) as exc:
            await self.close()
            reason = getattr(exc, "orig", None) or exc
            raise StoreUnavailableError(
                f"The SQLite log at {str(self.path)!r} cannot be opened: "
                f"{str(reason).rstrip('.')}. Check the path and its permissions, "
                "or pass another --database.",
                path=str(self.path),
            ) from exc

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._exclusive:
            self._take_lock()
        self._sync_engine = sa.create_engine(
            f"sqlite:///{self.path}", poolclass=sa.pool.StaticPool
        )
        sa.event.listen(self._sync_engine, "connect", self._configure)
        sa.event.listen(self._sync_engine, "begin", _begin)
        from engine.store.migrate import ensure_schema

        with self._sync_engine.connect() as connection:
            ensure_schema(connection, upgrade=self._migrate, url=self.url)
        raw = self._sync_engine.raw_connection()
        self._writer = raw.driver_connection  # type: ignore[assignment]
        self._reader = create_async_engine(f"sqlite+aiosqlite:///{self.path}")
        sa.event.listen(self._reader.sync_engine, "connect", self._configure)

    def _configure(self, dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level: we issue BEGIN IMMEDIATE ourselves,
        # so a batch takes the write lock before its first insert.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={self._synchronous}")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    def _take_lock(self) -> None:
        lock_path = f"{self.path}.lock"
        handle = open(lock_path, "a+")  # noqa: SIM115 - held until close
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreUnavailableError(
                f"Another worker process already runs on {str(self.path)!r}; "
                "an SQLite log serves one worker process at a time. Use "
                "PostgreSQL to run several workers on one log.",
                path=str(self.path),
            ) from None
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_file = handle

    async def close(self) -> None:
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        if self._reader is not None:
            await self._reader.dispose()
        if self._lock_file is not None:
            self._lock_file.close()
        self._writer = self._sync_engine = self._reader = self._lock_file = None

    def append_now(self, events: Sequence[TaskEvent]) -> list[int]:
        """Append in place, on the calling thread; see the module docstring.

        The write lock of SQLite serialises writers, so positions are
        assigned in commit order and one batch's positions are contiguous.
        """
        writer = self._writer
        if writer is None:
            raise StoreError("The SQLite store is closed; no more appends.")
        rows = [encode_row(event) for event in events]
        try:
            if len(rows) <= _ONE_STATEMENT_ROWS:
                # One statement in autocommit mode is its own transaction:
                # one call instead of BEGIN, INSERT, SELECT and COMMIT.
                params = [value for row in rows for value in row]
                cursor = writer.execute(_insert_rows(len(rows)), params)
                last = int(cursor.lastrowid or 0)
            else:
                last = self._insert_many(writer, rows)
        except sqlite3.Error as exc:
            raise translate_error(exc, events) from exc
        first = last - len(rows) + 1
        return list(range(first, last + 1))

    @staticmethod
    def _insert_many(writer: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
        writer.execute("BEGIN IMMEDIATE")
        try:
            writer.executemany(_INSERT, rows)
            last = writer.execute("SELECT last_insert_rowid()").fetchone()[0]
            writer.execute("COMMIT")
        except BaseException:
            writer.execute("ROLLBACK")
            raise
        return int(last)

    async def append(self, events: Sequence[TaskEvent]) -> list[int]:
        return self.append_now(events)

    async def _fetch(self, sql: str, params: dict[str, Any]) -> list[TaskEvent]:
        if self._reader is None:
            raise StoreError("The SQLite store is closed; open it first.")
        try:
            async with self._reader.connect() as connection:
                result = await connection.exec_driver_sql(sql, params)
                rows = result.fetchall()
        except sa.exc.DBAPIError as exc:
            raise translate_error(exc.orig, ()) from exc
        with collector_paused(len(rows)):
            return [decode_row(row) for row in rows]

    async def read(self, after: int = 0, limit: int | None = None) -> list[TaskEvent]:
        sql = f"{_SELECT} WHERE position > :after ORDER BY position"
        params: dict[str, Any] = {"after": after}
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = limit
        return await self._fetch(sql, params)

    async def read_task(self, task_id: str) -> list[TaskEvent]:
        sql = f"{_SELECT} WHERE task_id = :task_id ORDER BY version"
        return await self._fetch(sql, {"task_id": task_id})

    async def last_position(self) -> int:
        if self._reader is None:
            raise StoreError("The SQLite store is closed; open it first.")
        async with self._reader.connect() as connection:
            result = await connection.exec_driver_sql(
                f"SELECT coalesce(max(position), 0) FROM {EVENTS_TABLE}"
            )
            return int(result.scalar_one())


def _begin(connection: sa.Connection) -> None:
    # The driver runs in autocommit mode (see _configure); SQLAlchemy's own
    # transactions therefore begin explicitly.
    connection.exec_driver_sql("BEGIN")


def translate_error(
    exc: BaseException | None, events: Sequence[TaskEvent]
) -> Exception:
    """Map a ``sqlite3`` error to our own; the one place this backend does."""
    if isinstance(exc, sqlite3.IntegrityError):
        first = events[0] if events else None
        return ConcurrencyConflictError(
            "Another writer already recorded one of these task events "
            f"(first: task {first.task_id!r} version {first.version})."
            if first
            else "Another writer already recorded one of these task events.",
            constraint="task_events_task_id_version_key",
        )
    if isinstance(exc, sqlite3.OperationalError):
        return StoreUnavailableError(
            f"The SQLite log cannot be written: {exc}.",
            sqlite_error=str(exc),
        )
    return StoreError(f"The SQLite log failed: {exc}.")
