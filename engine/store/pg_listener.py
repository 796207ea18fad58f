"""The PostgreSQL LISTEN connection that wakes tailing readers.

One dedicated asyncpg connection per store listens on the log's channel; a
supervisor task reconnects it with backoff when it drops and wakes every
reader so that they catch up from the log. Notifications carry a position,
never event data. This module may import asyncpg and nothing of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

__all__ = ["PgListener"]

logger = logging.getLogger(__name__)

_RECONNECT_FIRST_S = 0.1
_RECONNECT_MAX_S = 5.0
_LISTENER_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)

Connect = Callable[[], Awaitable[asyncpg.Connection]]


class PgListener:
    """A supervised ``LISTEN`` connection fanning wake-ups out to readers.

    Args:
        connect: opens a new connection (the store's settings).
        channel: the NOTIFY channel to listen on.
        health_check_s: how long the connection may stay silent before a
            ``SELECT 1`` checks it is still alive.
    """

    def __init__(
        self, connect: Connect, channel: str, *, health_check_s: float = 10.0
    ) -> None:
        self._connect = connect
        self._channel = channel
        self._health_check_s = health_check_s
        self._waiters: set[asyncio.Event] = set()
        self._first_attempt = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connection: asyncpg.Connection | None = None
        #: The highest position announced by a notification so far.
        self.notified_position = 0
        self._signals: dict[str, list[Callable[[int], None]]] = {}

    @property
    def connected(self) -> bool:
        """Whether the LISTEN connection is currently up."""
        connection = self._connection
        return connection is not None and not connection.is_closed()

    @property
    def backend_pid(self) -> int | None:
        """The server process id of the LISTEN connection, when connected."""
        connection = self._connection
        if connection is None or connection.is_closed():
            return None
        return int(connection.get_server_pid())

    async def start(self) -> None:
        """Start the supervisor and wait for its first connection attempt.

        A failed first attempt does not raise: readers fall back to polling
        while the supervisor keeps trying.
        """
        if self._task is None:
            self._task = asyncio.create_task(
                self._supervise(), name="taskengine-pg-listener"
            )
        await self._first_attempt.wait()

    async def close(self) -> None:
        """Stop listening and wake every reader."""
        self._closing.set()
        self._wake_all()
        if self._task is not None:
            await self._task
            self._task = None

    def subscribe(self) -> asyncio.Event:
        """A new wake-up event, set on every notification and reconnection."""
        event = asyncio.Event()
        self._waiters.add(event)
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        """Stop waking ``event``."""
        self._waiters.discard(event)

    async def on_signal(self, channel: str, callback: Callable[[int], None]) -> None:
        """Call ``callback`` with the sending server process id for every
        notification on ``channel``, a second channel this connection
        listens on from now on (and after every reconnection)."""
        first = channel not in self._signals
        self._signals.setdefault(channel, []).append(callback)
        connection = self._connection
        if first and connection is not None and not connection.is_closed():
            # A failure here means the connection is going: the supervisor
            # listens on every channel when it reconnects.
            with contextlib.suppress(*_LISTENER_ERRORS):
                await connection.add_listener(channel, self._on_signal)

    def _on_signal(
        self, _connection: object, pid: int, channel: str, _payload: object
    ) -> None:
        for callback in self._signals.get(channel, ()):
            callback(pid)

    async def wait(self, event: asyncio.Event, timeout_s: float) -> None:
        """Wait for ``event`` or ``timeout_s`` seconds (the fallback poll)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await event.wait()

    def _wake_all(self) -> None:
        for event in self._waiters:
            event.set()

    def _on_notify(
        self, _connection: object, _pid: int, _channel: str, payload: object
    ) -> None:
        try:
            position = int(str(payload))
        except ValueError:
            position = 0
        if position > self.notified_position:
            self.notified_position = position
        logger.debug(
            "Notification received",
            extra={"action": "notify_received", "position": position},
        )
        self._wake_all()

    async def _supervise(self) -> None:
        failures = 0
        lost_at: float | None = None
        while not self._closing.is_set():
            try:
                lost = await self._listen()
            except _LISTENER_ERRORS as exc:
                failures += 1
                self._first_attempt.set()
                logger.debug(
                    "Listener connection failed",
                    extra={
                        "action": "listener_connect_failed",
                        "attempt": failures,
                        "error": repr(exc)[:250],
                    },
                )
                await self._pause(_backoff_s(failures))
                continue
            if lost_at is not None:
                logger.warning(
                    "Listener reconnected",
                    extra={
                        "action": "listener_reconnected",
                        "attempt": failures + 1,
                        "duration_s": round(time.monotonic() - lost_at, 3),
                    },
                )
            failures = 0
            self._first_attempt.set()
            # Notifications sent while we were away are gone: readers must
            # read the log again from their own last position.
            self._wake_all()
            await self._watch(lost)
            if self._closing.is_set():
                break
            lost_at = time.monotonic()
            logger.warning(
                "Listener connection lost",
                extra={"action": "listener_connection_lost"},
            )
        await self._disconnect()

    async def _listen(self) -> asyncio.Event:
        lost = asyncio.Event()
        connection = await self._connect()
        connection.add_termination_listener(lambda _c: lost.set())
        try:
            await connection.add_listener(self._channel, self._on_notify)
            for channel in self._signals:
                await connection.add_listener(channel, self._on_signal)
        except BaseException:
            connection.terminate()
            raise
        self._connection = connection
        return lost

    async def _watch(self, lost: asyncio.Event) -> None:
        while not lost.is_set() and not self._closing.is_set():
            await self._pause(self._health_check_s, lost)
            if lost.is_set() or self._closing.is_set():
                break
            if not await self._healthy():
                break
        await self._disconnect()

    async def _healthy(self) -> bool:
        connection = self._connection
        if connection is None or connection.is_closed():
            return False
        try:
            await connection.fetchval("SELECT 1", timeout=self._health_check_s)
        except _LISTENER_ERRORS:
            return False
        return True

    async def _pause(self, delay_s: float, lost: asyncio.Event | None = None) -> None:
        waits = [asyncio.ensure_future(self._closing.wait())]
        if lost is not None:
            waits.append(asyncio.ensure_future(lost.wait()))
        try:
            await asyncio.wait(waits, timeout=delay_s, return_when="FIRST_COMPLETED")
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None or connection.is_closed():
            return
        try:
            await connection.close(timeout=2.0)
        except _LISTENER_ERRORS:
            connection.terminate()


def _backoff_s(failures: int) -> float:
    return min(_RECONNECT_FIRST_S * 2 ** (failures - 1), _RECONNECT_MAX_S)
