"""The PostgreSQL store: the production home of the log.

The hot path (appends, reads, LISTEN) runs on asyncpg; SQLAlchemy's async
engine is used only to check or migrate the schema on open. This module may
import :mod:`engine.events`, :mod:`engine.exceptions`, :mod:`engine.constants`
and the other modules of :mod:`engine.store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from engine.constants import NOTIFY_CHANNEL, RUNNABLE_CHANNEL
from engine.events import TaskEvent
from engine.exceptions import (
    ConcurrencyConflictError,
    SchemaVersionError,
    StoreError,
    StoreUnavailableError,
)
from engine.store.base import EventStore
from engine.store.pg_codec import (
    MAX_TASK_ID_LENGTH,
    claimed_pairs,
    event_columns,
    events_of_rows,
    fields_of_rows,
)
from engine.store.pg_listener import PgListener
from engine.store.pg_positions import OwnPositions
from engine.store.pg_sql import (
    APPEND,
    CLAIM,
    COMMIT_ORDER_LOCK_KEY,
    LAST_POSITION,
    READ,
    READ_TASK,
    REBUILD_STATEMENTS,
)
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

#: Longest a tail waits for this store's own writes in flight before it
#: reads the log anyway: other writers' events are never held back longer.
_OWN_WRITE_WAIT_S = 0.1
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
        # Positions written through this object, kept once a tail skips them.
        self._own: OwnPositions | None = None
        # Events written through this object, by position, kept for a tail
        # that yields them too (reuse_own): it hands these objects on
        # instead of decoding their rows again.
        self._held: dict[int, TaskEvent] | None = None
        # One future per append or claim in flight, done when it returns:
        # such a tail waits for them rather than read back rows that are
        # about to be held (their notification may arrive before the reply).
        self._writing: set[asyncio.Future[None]] = set()
        # Server process ids of the pool's connections, to tell our own
        # notifications from other processes'.
        self._backend_pids: set[int] = set()

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
                init=self._remember_backend,
            )
        logger.info(
            "Event store opened",
            extra={"action": "store_opened", "url": self.url},
        )

    async def _remember_backend(self, connection: asyncpg.Connection) -> None:
        self._backend_pids.add(connection.get_server_pid())

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

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        if self._held is None:  # no tail waits for our writes
            yield
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writing.add(done)
        try:
            yield
        finally:
            self._writing.discard(done)
            done.set_result(None)

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
        columns = event_columns(events)
        pool = self._open_pool()
        with self._translated(), self._in_flight():
            positions = await pool.fetchval(APPEND, *columns)
        if self._own is not None:
            self._own.add(positions)
        if self._held is not None:
            self._held.update(zip(positions, events, strict=True))
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
        with self._translated(), self._in_flight():
            rows = await pool.fetch(CLAIM, limit, node_id)
        if self._own is not None and rows:
            self._own.add([row[0] for row in rows])
        pairs = claimed_pairs(rows, node_id)
        if self._held is not None:
            held = self._held
            for _, started in pairs:
                held[started.__dict__["position"]] = started
        return pairs

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
            rows = await pool.fetch(READ, after, limit)
        return events_of_rows(rows)

    async def read_task(self, task_id: str) -> list[TaskEvent]:
        pool = self._open_pool()
        with self._translated():
            rows = await pool.fetch(READ_TASK, task_id)
        return events_of_rows(rows)

    async def last_position(self) -> int:
        pool = self._open_pool()
        with self._translated():
            return int(await pool.fetchval(LAST_POSITION))

    async def iter_batches(
        self, after: int = 0, batch_size: int = 10_000
    ) -> AsyncIterator[list[TaskEvent]]:
        """Read the log after ``after`` in batches, in log order.

        One connection serves the whole iteration, and the next batch is
        requested before the current one is decoded, so the server reads
        while this process decodes.
        """
        async for rows in self._row_batches(after, batch_size):
            yield events_of_rows(rows)

    async def iter_fields(
        self, after: int = 0, batch_size: int = 10_000
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """:meth:`iter_batches` with each event as a dict of its fields,
        built from its row without a ``TaskEvent`` (what a replay folds)."""
        async for rows in self._row_batches(after, batch_size):
            yield fields_of_rows(rows)

    async def _row_batches(
        self, after: int, batch_size: int
    ) -> AsyncIterator[list[Any]]:
        pool = self._open_pool()
        with self._translated():
            connection = await pool.acquire()
        pending = asyncio.ensure_future(connection.fetch(READ, after, batch_size))
        try:
            while True:
                with self._translated():
                    rows = await pending
                if not rows:
                    return
                pending = asyncio.ensure_future(
                    connection.fetch(READ, rows[-1][0], batch_size)
                )
                await asyncio.sleep(0)  # let the request go out first
                yield rows
        finally:
            await _settle(pending)
            with self._translated():
                await pool.release(connection)

    async def tail(
        self,
        after: int,
        *,
        poll_interval_s: float = 1.0,
        batch_size: int = 1_000,
        skip_own: bool = False,
        reuse_own: bool = False,
    ) -> AsyncIterator[list[TaskEvent]]:
        """Yield batches of events after position ``after`` as they commit.

        Woken by ``LISTEN`` on the store's listener connection, with a poll
        every ``poll_interval_s`` as the fallback. Each event is yielded once,
        in log order; after the listener reconnects, or after the server was
        unreachable for a while, reading resumes from the last event yielded.
        The iteration ends when the store is closed.

        With ``skip_own``, events this store object appended or claimed once
        the tail started are left out (their writer already holds them): a
        notification of nothing but such events costs no read.

        With ``reuse_own`` (and not ``skip_own``), events this store object
        appended or claimed once the tail started are yielded as the very
        objects that were written (their positions filled in), not decoded
        from their rows again; while the next positions are all such events
        nothing is read. A notification that overtakes the reply of this
        store's own write makes the tail wait for its writes in flight (at
        most 0.1 s) before it reads.
        """
        listener = await self._start_listener()
        own = self._own_positions() if skip_own else None
        held = None
        if reuse_own and not skip_own:
            held = self._held = {} if self._held is None else self._held
        wake = listener.subscribe()
        waited = False
        try:
            while True:
                wake.clear()
                notified = listener.notified_position
                if held is not None and notified > after:
                    if self._writing and not waited:
                        # Our own appends or claims may hold these
                        # positions: their replies are due any moment.
                        await asyncio.wait(
                            list(self._writing),
                            timeout=min(poll_interval_s, _OWN_WRITE_WAIT_S),
                        )
                        waited = True
                        continue
                    # Every position up to the notified one is ours: hand
                    # those on with no read (positions commit in order).
                    events = _held_run(held, after, notified, batch_size)
                    if events:
                        after = events[-1].__dict__["position"]
                        waited = False
                        yield events
                        if after >= notified:
                            await listener.wait(wake, poll_interval_s)
                        continue
                waited = False
                if own is not None and notified > after and own.covers(after, notified):
                    after = notified
                    own.forget_through(after)
                    await listener.wait(wake, poll_interval_s)
                    continue
                rows = await self._tail_read(after, batch_size)
                if rows is None:
                    return
                if rows:
                    full, after = len(rows) == batch_size, rows[-1][0]
                    if own is not None:
                        rows = [row for row in rows if row[0] not in own]
                        own.forget_through(after)
                    if rows:
                        yield events_of_rows(rows, held)
                        if held is not None and held and len(held) > 4 * batch_size:
                            _forget_through(held, after)
                    if full:
                        continue
                await listener.wait(wake, poll_interval_s)
        finally:
            listener.unsubscribe(wake)
            if held is not None:
                self._held = None

    def _own_positions(self) -> OwnPositions:
        if self._own is None:
            self._own = OwnPositions()
        return self._own

    async def start_listening(self) -> None:
        """Open the LISTEN connection now rather than on the first :meth:`tail`.

        Returns after the first connection attempt; when it failed, tails poll
        until the listener's supervisor reconnects.
        """
        await self._start_listener()

    async def on_runnable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever another process's append commits
        ``queued`` events that made tasks runnable, as its notification
        arrives; claimers use it to claim without reading the log first.
        Appends through this store object are not reported (their writer
        knows). Call after :meth:`start_listening`.

        Raises:
            StoreError: the listener is not started.
        """
        if self._listener is None:
            raise StoreError(
                "The PostgreSQL store is not listening yet; call "
                "'await store.start_listening()' before on_runnable()."
            )
        own = self._backend_pids

        def foreign(pid: int) -> None:
            if pid not in own:
                callback()

        await self._listener.on_signal(RUNNABLE_CHANNEL, foreign)

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

    async def _tail_read(self, after: int, limit: int) -> list[Any] | None:
        delay_s = _TAIL_RETRY_FIRST_S
        while self._pool is not None:
            try:
                with self._translated():
                    return list(await self._open_pool().fetch(READ, after, limit))
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


def _held_run(
    held: dict[int, TaskEvent], after: int, notified: int, limit: int
) -> list[TaskEvent] | None:
    """The events at the positions after ``after`` up to ``notified`` (at
    most ``limit``), taken from ``held`` when it holds every one of them;
    None when some position is another writer's (or a gap) and must be
    read."""
    end = min(notified, after + limit)
    if end <= after or any(p not in held for p in range(after + 1, end + 1)):
        return None
    events = []
    for position in range(after + 1, end + 1):
        event = held.pop(position)
        if event.__dict__["position"] is None:
            event.__dict__["position"] = position  # not sealed yet
        events.append(event)
    return events


def _forget_through(held: dict[int, TaskEvent], position: int) -> None:
    # Events a tail read passed without taking (it resumed past them).
    for stale in [p for p in held if p <= position]:
        del held[stale]
