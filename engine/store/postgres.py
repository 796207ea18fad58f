"""The PostgreSQL store: the production home of the log.

The hot path (appends, reads, LISTEN) runs on asyncpg; SQLAlchemy's async
engine is used only to check or migrate the schema on open. This module may
import :mod:`engine.events`, :mod:`engine.exceptions`, :mod:`engine.constants`
and the other modules of :mod:`engine.store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from engine.constants import (
    EVENTS_TABLE,
    LEASES_TABLE,
    NOTIFY_CHANNEL,
    RUNNABLE_TABLE,
)
from engine.events import EventType, TaskEvent, decode_payload, encode_payload
from engine.exceptions import (
    ConcurrencyConflictError,
    PayloadEncodingError,
    SchemaVersionError,
    StoreError,
    StoreUnavailableError,
)
from engine.store.base import EventStore
from engine.store.pg_listener import PgListener
from engine.store.urls import async_url, safe_url

__all__ = [
    "COMMIT_ORDER_LOCK_KEY",
    "MAX_TASK_ID_LENGTH",
    "REBUILD_STATEMENTS",
    "PostgresEventStore",
    "asyncpg_dsn",
    "translate_error",
]

logger = logging.getLogger(__name__)

#: Key of the transaction-level advisory lock every insert into the log
#: takes first (the first eight bytes of sha1("taskengine:append")).
COMMIT_ORDER_LOCK_KEY = 0x2B8E_5F07_4C1D_93A6

#: Longest task id the PostgreSQL log accepts. The unique index on
#: ``(task_id, version)`` refuses entries over 2,704 bytes, and four bytes
#: per character is the UTF-8 worst case.
MAX_TASK_ID_LENGTH = 512

# Commit order. Positions come from an identity sequence, and a sequence
# hands out numbers when rows are inserted, not when they commit: with two
# writers, A may take position 7 and B position 8, B commits, a tailing
# reader reads 8 and moves its cursor past 7, then A commits 7 and the reader
# never sees it. Every append therefore takes a transaction-level advisory
# lock before its first row takes a position; the lock is released only
# after the commit is visible, so positions are handed out, and become
# visible, in commit order. The lock sits in a materialised CTE that the
# insert joins, so it is acquired before the first nextval() of the
# statement, and the whole append (lock, insert, NOTIFY, commit) stays one
# round trip. The price is that appends from all processes commit one at a
# time: docs/postgres.md gives the measured cost. The identity sequence must
# keep CACHE 1, or sessions would draw numbers from private ranges out of
# order. The alternative, storing the writer's xid8 and reading only below
# the oldest running transaction, costs a column and a harder read query.
# See https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS
#
# The cluster's projections (``task_runnable``: tasks whose last event is
# ``queued``; ``task_leases``: tasks whose last event is ``started`` or
# ``progress``, with the node running them) are written by the same
# statement, so they can never disagree with the log. Only the last event of
# each task in the batch counts: a batch may hold a task's ``queued`` and
# ``started`` together, and the CTEs of one statement share one snapshot.
_APPEND = f"""
WITH serialised AS MATERIALIZED (
    SELECT pg_advisory_xact_lock({COMMIT_ORDER_LOCK_KEY})
), inserted AS (
    INSERT INTO {EVENTS_TABLE} (task_id, version, type, at, data)
    SELECT e.task_id, e.version, e.type, e.at, e.data
    FROM serialised, unnest(
        $1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::jsonb[]
    ) AS e(task_id, version, type, at, data)
    RETURNING position, task_id, version, type, data
), last AS (
    SELECT DISTINCT ON (task_id) task_id, version, type, position, data
    FROM inserted ORDER BY task_id, version DESC
), runnable AS (
    INSERT INTO {RUNNABLE_TABLE} (task_id, priority, position, version, attempt)
    SELECT task_id, coalesce((data->>'priority')::bigint, 0), position, version,
        coalesce((data->>'attempt')::int, 1)
    FROM last WHERE type = 'queued'
    ON CONFLICT (task_id) DO UPDATE SET priority = excluded.priority,
        position = excluded.position, version = excluded.version,
        attempt = excluded.attempt
), taken AS (
    DELETE FROM {RUNNABLE_TABLE}
    WHERE task_id = ANY(ARRAY(SELECT task_id FROM last WHERE type <> 'queued'))
), leased AS (
    INSERT INTO {LEASES_TABLE} (task_id, node_id, attempt)
    SELECT task_id, data->>'node_id', coalesce((data->>'attempt')::int, 1)
    FROM last WHERE type = 'started'
    ON CONFLICT (task_id) DO UPDATE SET node_id = excluded.node_id,
        attempt = excluded.attempt
), released AS (
    DELETE FROM {LEASES_TABLE} WHERE task_id = ANY(ARRAY(
        SELECT task_id FROM last WHERE type NOT IN ('started', 'progress')
    ))
)
SELECT array_agg(position ORDER BY position) AS positions,
    pg_notify('{NOTIFY_CHANNEL}', max(position)::text) AS notified
FROM inserted
"""

# Claiming: the runnable rows of the first tasks by (priority, queued
# position) are deleted and their ``started`` events inserted in one
# statement, so a claim is durable before any body runs. The commit-order
# lock is taken first, through a one-time filter evaluated before the scan
# locks any row: an append (which holds that lock) may delete runnable rows,
# and a claim holding row locks while waiting for the lock would deadlock
# with it.
_CLAIM = f"""
WITH serialised AS MATERIALIZED (
    SELECT pg_advisory_xact_lock({COMMIT_ORDER_LOCK_KEY})
), picked AS (
    SELECT task_id FROM {RUNNABLE_TABLE}
    WHERE EXISTS (SELECT FROM serialised)
    ORDER BY priority, position LIMIT $1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    DELETE FROM {RUNNABLE_TABLE}
    WHERE task_id = ANY(ARRAY(SELECT task_id FROM picked))
    RETURNING task_id, version, attempt, priority, position
), inserted AS (
    INSERT INTO {EVENTS_TABLE} (task_id, version, type, at, data)
    SELECT task_id, version + 1, 'started', now(),
        jsonb_build_object('attempt', attempt, 'node_id', $2::text)
    FROM claimed ORDER BY priority, position
    RETURNING position, task_id, version, type, at, data
), leased AS (
    INSERT INTO {LEASES_TABLE} (task_id, node_id, attempt)
    SELECT task_id, $2::text, attempt FROM claimed
    ON CONFLICT (task_id) DO UPDATE SET node_id = excluded.node_id,
        attempt = excluded.attempt
), queued AS (
    SELECT * FROM {EVENTS_TABLE}
    WHERE position = ANY(ARRAY(SELECT position FROM claimed))
)
SELECT i.position, i.task_id, i.version, i.type, i.at, i.data,
    q.position, q.task_id, q.version, q.type, q.at, q.data,
    CASE WHEN i.position = max(i.position) OVER ()
        THEN pg_notify('{NOTIFY_CHANNEL}', i.position::text) END
FROM inserted i JOIN queued q ON q.task_id = i.task_id
ORDER BY i.position
"""

_LAST_EVENTS = f"""
    SELECT DISTINCT ON (task_id) task_id, version, type, position, data
    FROM {EVENTS_TABLE} ORDER BY task_id, version DESC
"""

#: Statements that rebuild the cluster's projections from the log, in one
#: transaction (run by revision 0002 and :meth:`rebuild_projections`).
REBUILD_STATEMENTS = (
    f"SELECT pg_advisory_xact_lock({COMMIT_ORDER_LOCK_KEY})",
    f"DELETE FROM {RUNNABLE_TABLE}",
    f"DELETE FROM {LEASES_TABLE}",
    f"""
    INSERT INTO {RUNNABLE_TABLE} (task_id, priority, position, version, attempt)
    SELECT task_id, coalesce((data->>'priority')::bigint, 0), position, version,
        coalesce((data->>'attempt')::int, 1)
    FROM ({_LAST_EVENTS}) last WHERE type = 'queued'
    """,
    f"""
    INSERT INTO {LEASES_TABLE} (task_id, node_id, attempt)
    SELECT s.task_id, s.data->>'node_id', coalesce((s.data->>'attempt')::int, 1)
    FROM ({_LAST_EVENTS}) last
    JOIN (
        SELECT DISTINCT ON (task_id) task_id, data FROM {EVENTS_TABLE}
        WHERE type = 'started' ORDER BY task_id, version DESC
    ) s USING (task_id)
    WHERE last.type IN ('started', 'progress')
    """,
)
_SELECT = f"SELECT position, task_id, version, type, at, data FROM {EVENTS_TABLE}"
_READ = f"{_SELECT} WHERE position > $1 ORDER BY position LIMIT $2"
_READ_TASK = f"{_SELECT} WHERE task_id = $1 ORDER BY version"
_LAST_POSITION = f"SELECT coalesce(max(position), 0) FROM {EVENTS_TABLE}"

_TYPES = {member.value: member for member in EventType}
_TAG_MARK = '"$te"'
_GC_PAUSE_MIN_ROWS = 1_000
_TAIL_RETRY_FIRST_S = 0.1
_TAIL_RETRY_MAX_S = 5.0

_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "28", "3D", "53", "57P")


def asyncpg_dsn(url: str) -> str:
    """The URL as asyncpg takes it: ``postgresql://`` without a driver."""
    parsed = sa.engine.make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def translate_error(exc: BaseException, url: str) -> StoreError:
    """Map an asyncpg or socket error to ours; the one place this backend does.

    Callers raise the result ``from exc``.
    """
    where = safe_url(url)
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, asyncpg.UniqueViolationError):
        return ConcurrencyConflictError(
            "Another writer already recorded one of these task events "
            f"({exc.detail or exc}).",
            constraint_name=exc.constraint_name,
            sqlstate=sqlstate,
        )
    if isinstance(exc, asyncpg.UndefinedTableError):
        return SchemaVersionError(
            f"The database at {where!r} has no event log table; run "
            "'taskengine db upgrade --database URL'.",
            sqlstate=sqlstate,
        )
    if _is_unavailable(exc, sqlstate):
        return StoreUnavailableError(
            f"The PostgreSQL log at {where!r} cannot be reached: {exc}.",
            sqlstate=sqlstate,
        )
    return StoreError(
        f"The PostgreSQL log at {where!r} failed: {type(exc).__name__}: {exc}.",
        sqlstate=sqlstate,
    )


def _is_unavailable(exc: BaseException, sqlstate: str | None) -> bool:
    if isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.ConnectionDoesNotExistError
        | asyncpg.PostgresConnectionError
        # A connection broken mid-protocol by a server restart reports an
        # internal state error on its next use.
        | asyncpg.InternalClientError,
    ):
        return True
    return sqlstate is not None and sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)


def _check_task_id(value: str) -> None:
    if "\x00" in value:
        problem = "contains a NUL character"
    elif value.isascii():
        return
    else:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            problem = "contains a lone surrogate"
        else:
            return
    raise PayloadEncodingError(
        f"The task id {value[:80]!r} {problem}, which PostgreSQL text cannot "
        "store; use printable text.",
        path="task_id",
    )


def _columns(events: Sequence[TaskEvent]) -> tuple[list[Any], ...]:
    task_ids, versions, types, ats, datas = [], [], [], [], []
    dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    for event in events:
        task_id = event.task_id
        if len(task_id) > MAX_TASK_ID_LENGTH:
            raise PayloadEncodingError(
                f"The task id {task_id[:40]!r}... is {len(task_id):,} characters "
                f"long; the PostgreSQL log accepts at most {MAX_TASK_ID_LENGTH}.",
                path="task_id",
            )
        _check_task_id(task_id)
        task_ids.append(task_id)
        versions.append(event.version)
        types.append(event.type.value)
        ats.append(event.at)
        datas.append(dumps(encode_payload(event.data, "event data")))
    return task_ids, versions, types, ats, datas


def _decode(rows: Sequence[Any]) -> list[TaskEvent]:
    # The codec wraps a value only under the key "$te", and jsonb prints that
    # key verbatim, so a payload without the mark needs no walk.
    build, loads, types = TaskEvent.build, json.loads, _TYPES
    events = []
    with _collector_paused(len(rows)):
        for position, task_id, version, type_, at, raw in rows:
            data = loads(raw)
            if _TAG_MARK in raw:
                data = decode_payload(data)
            events.append(build(position, task_id, version, types[type_], at, data))
    return events


@contextlib.contextmanager
def _collector_paused(size: int) -> Iterator[None]:
    # Decoding a batch allocates a few containers per event and frees none,
    # so the cyclic collector runs every 700 allocations and walks the young
    # batch again each time, finding nothing: a batch of events holds no
    # reference cycles. Pausing it for large batches raised replay from
    # about 180,000 to 215,000-240,000 events per second (bench_pg_store.py).
    if size < _GC_PAUSE_MIN_ROWS or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _settle(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.cancel()
    with contextlib.suppress(asyncio.CancelledError, *_DRIVER_ERRORS):
        await future


class PostgresEventStore(EventStore):
    """An :class:`EventStore` in a PostgreSQL database.

    Args:
        url: ``postgresql://...`` or ``postgresql+asyncpg://...``.
        migrate: bring the schema to head on open; otherwise a database
            behind or ahead of this code is refused.
        min_connections: connections the pool keeps open.
        max_connections: most connections the pool opens.
        connect_timeout_s: how long to wait for a new connection.
        application_name: shown in ``pg_stat_activity``; the LISTEN
            connection adds ``_listener``.
    """

    #: Workers on this store share their queue with other processes.
    clustered = True

    def __init__(
        self,
        url: str,
        *,
        migrate: bool = False,
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout_s: float = 10.0,
        application_name: str = "taskengine",
    ) -> None:
        self.url = safe_url(url)
        self._raw_url = url
        self._dsn = asyncpg_dsn(url)
        self._migrate = migrate
        self._min_connections = min_connections
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._application_name = application_name
        self._pool: asyncpg.Pool | None = None
        self._listener: PgListener | None = None

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except _DRIVER_ERRORS as exc:
            raise translate_error(exc, self._raw_url) from exc

    async def open(self) -> None:
        """Check (or migrate) the schema, then open the connection pool.

        Raises:
            SchemaVersionError: the schema is not at this code's head.
            StoreUnavailableError: the server cannot be reached.
        """
        if self._pool is not None:
            return
        await self._check_schema()
        with self._translated():
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_connections,
                max_size=self._max_connections,
                timeout=self._connect_timeout_s,
                server_settings={"application_name": self._application_name},
            )
        logger.info(
            "Event store opened",
            extra={"action": "store_opened", "url": self.url},
        )

    async def _check_schema(self) -> None:
        from engine.store.migrate import ensure_schema

        engine = create_async_engine(
            async_url(self._raw_url),
            poolclass=sa.pool.NullPool,
            connect_args={"timeout": self._connect_timeout_s},
        )
        try:
            async with engine.connect() as connection:
                await connection.run_sync(
                    ensure_schema, upgrade=self._migrate, url=self._raw_url
                )
        except sa.exc.DBAPIError as exc:
            cause = exc.orig.__cause__ if exc.orig is not None else None
            raise translate_error(cause or exc, self._raw_url) from exc
        except _DRIVER_ERRORS as exc:
            raise translate_error(exc, self._raw_url) from exc
        finally:
            await engine.dispose()

    async def close(self) -> None:
        """Stop the listener and close every connection."""
        listener, self._listener = self._listener, None
        pool, self._pool = self._pool, None
        if listener is not None:
            await listener.close()
        if pool is not None:
            with self._translated():
                await pool.close()

    def _open_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError(
                f"The PostgreSQL store for {self.url!r} is closed; call "
                "'await store.open()' first."
            )
        return self._pool

    async def append(self, events: Sequence[TaskEvent]) -> list[int]:
        """Write ``events`` in one transaction and one round trip.

        Raises:
            PayloadEncodingError: a task id or payload cannot be stored; no
                event of the batch is written.
            ConcurrencyConflictError: an event's ``(task_id, version)`` exists.
            StoreUnavailableError: the server cannot be reached.
        """
        if not events:
            return []
        columns = _columns(events)
        pool = self._open_pool()
        with self._translated():
            positions = await pool.fetchval(_APPEND, *columns)
        logger.debug(
            "Append batch flushed",
            extra={
                "action": "append_batch_flushed",
                "batch_size": len(events),
                "position": positions[-1],
            },
        )
        return list(positions)

    async def claim(
        self, node_id: str, limit: int
    ) -> list[tuple[TaskEvent, TaskEvent]]:
        """Claim up to ``limit`` runnable tasks for ``node_id``, in priority
        order, writing their ``started`` events in the same transaction.

        Returns:
            ``(queued, started)`` event pairs, in claim order.
        """
        pool = self._open_pool()
        with self._translated():
            rows = await pool.fetch(_CLAIM, limit, node_id)
        started = _decode([row[:6] for row in rows])
        queued = _decode([row[6:12] for row in rows])
        return list(zip(queued, started, strict=True))

    async def rebuild_projections(self) -> None:
        """Rebuild the runnable and lease tables from the log."""
        pool = self._open_pool()
        with self._translated():
            async with pool.acquire() as connection, connection.transaction():
                for statement in REBUILD_STATEMENTS:
                    await connection.execute(statement)

    async def query(self, sql: str, *args: Any) -> list[Any]:
        """Run one statement of the cluster's bookkeeping; its rows.

        Raises:
            StoreUnavailableError: the server cannot be reached.
        """
        pool = self._open_pool()
        with self._translated():
            return list(await pool.fetch(sql, *args))

    async def read(self, after: int = 0, limit: int | None = None) -> list[TaskEvent]:
        pool = self._open_pool()
        with self._translated():
            rows = await pool.fetch(_READ, after, limit)
        return _decode(rows)

    async def read_task(self, task_id: str) -> list[TaskEvent]:
        pool = self._open_pool()
        with self._translated():
            rows = await pool.fetch(_READ_TASK, task_id)
        return _decode(rows)

    async def last_position(self) -> int:
        pool = self._open_pool()
        with self._translated():
            return int(await pool.fetchval(_LAST_POSITION))

    async def iter_batches(
        self, after: int = 0, batch_size: int = 10_000
    ) -> AsyncIterator[list[TaskEvent]]:
        """Read the log after ``after`` in batches, in log order.

        One connection serves the whole iteration, and the next batch is
        requested before the current one is decoded, so the server reads
        while this process decodes.
        """
        pool = self._open_pool()
        with self._translated():
            connection = await pool.acquire()
        pending = asyncio.ensure_future(connection.fetch(_READ, after, batch_size))
        try:
            while True:
                with self._translated():
                    rows = await pending
                if not rows:
                    return
                pending = asyncio.ensure_future(
                    connection.fetch(_READ, rows[-1][0], batch_size)
                )
                await asyncio.sleep(0)  # let the request go out first
                yield _decode(rows)
        finally:
            await _settle(pending)
            with self._translated():
                await pool.release(connection)

    async def tail(
        self, after: int, *, poll_interval_s: float = 1.0, batch_size: int = 1_000
    ) -> AsyncIterator[list[TaskEvent]]:
        """Yield batches of events after position ``after`` as they commit.

        Woken by ``LISTEN`` on the store's listener connection, with a poll
        every ``poll_interval_s`` as the fallback. Each event is yielded once,
        in log order; after the listener reconnects, or after the server was
        unreachable for a while, reading resumes from the last event yielded.
        The iteration ends when the store is closed.
        """
        listener = await self._start_listener()
        wake = listener.subscribe()
        try:
            while True:
                wake.clear()
                batch = await self._tail_read(after, batch_size)
                if batch is None:
                    return
                if batch:
                    position = batch[-1].position
                    assert position is not None
                    after = position
                    yield batch
                    if len(batch) == batch_size:
                        continue
                await listener.wait(wake, poll_interval_s)
        finally:
            listener.unsubscribe(wake)

    async def start_listening(self) -> None:
        """Open the LISTEN connection now rather than on the first :meth:`tail`.

        Returns after the first connection attempt; when it failed, tails poll
        until the listener's supervisor reconnects.
        """
        await self._start_listener()

    async def _start_listener(self) -> PgListener:
        self._open_pool()
        if self._listener is None:
            self._listener = PgListener(self._connect_listener, NOTIFY_CHANNEL)
        listener = self._listener
        await listener.start()
        return listener

    async def _connect_listener(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout_s,
            server_settings={"application_name": f"{self._application_name}_listener"},
        )

    async def _tail_read(self, after: int, limit: int) -> list[TaskEvent] | None:
        delay_s = _TAIL_RETRY_FIRST_S
        while self._pool is not None:
            try:
                return await self.read(after, limit)
            except StoreUnavailableError as exc:
                logger.warning(
                    "Tail read failed, retrying",
                    extra={
                        "action": "tail_read_retried",
                        "position": after,
                        "error": str(exc)[:250],
                    },
                )
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, _TAIL_RETRY_MAX_S)
        return None
