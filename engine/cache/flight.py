"""Single-flight: identical work running at once is computed by one leader.

Election has two layers. In one process, the first caller for a key owns an
``asyncio`` future in ``_local``; later callers wait on it. The owner then
takes the adapter's lease on the key (Redis: ``SET NX PX``), so across
processes exactly one caller leads. Callers that lose the lease poll for the
value with exponential backoff. The leader renews its lease every third of
``lease_s`` while it works; if its process dies the lease expires and a
waiter takes over, so a dead leader never blocks anyone for longer than one
lease. When a leader leaves without storing a value (it failed, or the value
could not be cached), the election runs again: at most one caller computes
at a time. This module imports only other ``engine.cache`` modules.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from engine.cache.base import CacheAdapter
from engine.cache.constants import truncate
from engine.cache.errors import CacheError

__all__ = ["Flight", "FlightRole", "SingleFlight"]

logger = logging.getLogger(__name__)

LookupFn = Callable[[str], Awaitable[tuple[bool, Any]]]
StoreFn = Callable[[str, Any, float | None], Awaitable[bool]]


class FlightRole(enum.StrEnum):
    """What a caller of ``single_flight`` must do."""

    HIT = "hit"
    """The value was cached, or another caller computed it: use ``value``."""
    LEADER = "leader"
    """Compute the value, then ``publish`` it; others are waiting for it."""
    BYPASS = "bypass"
    """Compute without coordination (cache disabled, bad key, wait timed out)."""


@dataclass(slots=True)
class Flight:
    """The outcome of a single-flight election, yielded by ``single_flight``.

    Attributes:
        key: The cache key, or ``None`` when no key could be built.
        role: See :class:`FlightRole`.
        value: The cached value (a fresh copy) when ``role`` is ``HIT``.
    """

    key: str | None
    role: FlightRole
    value: Any = None
    _store: StoreFn | None = field(default=None, repr=False)

    @property
    def hit(self) -> bool:
        """True when ``value`` holds the result and nothing must be computed."""
        return self.role is FlightRole.HIT

    @property
    def leader(self) -> bool:
        """True when this caller was elected to compute the value."""
        return self.role is FlightRole.LEADER

    async def publish(self, value: Any, ttl: float | None = None) -> bool:
        """Store the computed value for the waiters; True when it was cached.

        Never raises for a value the cache cannot hold: it logs a warning and
        returns False, and waiters then elect a new leader.
        """
        if self.role is FlightRole.HIT or self._store is None or self.key is None:
            return False
        return await self._store(self.key, value, ttl)


@dataclass(slots=True)
class _Ticket:
    role: FlightRole
    value: Any = None
    local: asyncio.Future[None] | None = None
    token: str | None = None
    renewer: asyncio.Task[None] | None = None


class SingleFlight:
    """Elects one leader per key, in this process and across processes.

    Args:
        adapter: Supplies the leases.
        lookup: Reads a cached value by key (misses on backend errors).
        poll_initial_s: First wait between polls for another process's value.
        poll_max_s: Longest wait between polls.
    """

    def __init__(
        self,
        adapter: CacheAdapter,
        lookup: LookupFn,
        *,
        poll_initial_s: float = 0.005,
        poll_max_s: float = 0.25,
    ) -> None:
        self._adapter = adapter
        self._lookup = lookup
        self._poll_initial_s = poll_initial_s
        self._poll_max_s = poll_max_s
        self._local: dict[str, asyncio.Future[None]] = {}

    @asynccontextmanager
    async def flight(
        self,
        key: str,
        store: StoreFn,
        *,
        lease_s: float,
        wait_timeout_s: float | None = None,
    ) -> AsyncIterator[Flight]:
        """Elect, yield the :class:`Flight`, then release what was held."""
        loop = asyncio.get_running_loop()
        deadline_s = None if wait_timeout_s is None else loop.time() + wait_timeout_s
        ticket = await self._elect(key, lease_s, deadline_s)
        try:
            yield Flight(key, ticket.role, ticket.value, store)
        finally:
            await self._land(key, ticket)

    async def _elect(
        self, key: str, lease_s: float, deadline_s: float | None
    ) -> _Ticket:
        while True:
            hit, value = await self._lookup(key)
            if hit:
                return _Ticket(FlightRole.HIT, value)
            running = self._local.get(key)
            if running is None:
                break
            if not await self._wait_local(running, deadline_s):
                return self._timed_out(key)
        local = asyncio.get_running_loop().create_future()
        self._local[key] = local
        try:
            return await self._elect_across(key, lease_s, deadline_s, local)
        except BaseException:
            self._finish_local(key, local)
            raise

    async def _wait_local(
        self, running: asyncio.Future[None], deadline_s: float | None
    ) -> bool:
        timeout_s = _remaining(deadline_s)
        done, _ = await asyncio.wait({running}, timeout=timeout_s)
        return bool(done)

    async def _elect_across(
        self,
        key: str,
        lease_s: float,
        deadline_s: float | None,
        local: asyncio.Future[None],
    ) -> _Ticket:
        token = uuid.uuid4().hex
        delay_s = self._poll_initial_s
        while True:
            try:
                taken = await self._adapter.acquire_lease(key, token, lease_s)
            except CacheError:
                # Backend down: lead within this process; the outage is logged
                # once by the adapter.
                return _Ticket(FlightRole.LEADER, local=local)
            if taken:
                renewer = asyncio.create_task(self._renew(key, token, lease_s))
                return _Ticket(FlightRole.LEADER, None, local, token, renewer)
            remaining_s = _remaining(deadline_s)
            if remaining_s is not None and remaining_s <= 0:
                return self._timed_out(key, local)
            # Another process leads: poll for its value with backoff.
            await asyncio.sleep(min(delay_s, remaining_s or delay_s))
            delay_s = min(delay_s * 2, self._poll_max_s)
            hit, value = await self._lookup(key)
            if hit:
                self._finish_local(key, local)
                return _Ticket(FlightRole.HIT, value)

    def _timed_out(
        self, key: str, local: asyncio.Future[None] | None = None
    ) -> _Ticket:
        logger.warning(
            "Single-flight wait timed out, computing without the cache",
            extra={"action": "cache_flight_wait_timeout", "cache_key": truncate(key)},
        )
        return _Ticket(FlightRole.BYPASS, local=local)

    async def _renew(self, key: str, token: str, lease_s: float) -> None:
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                still_held = await self._adapter.renew_lease(key, token, lease_s)
            except CacheError:
                continue
            if not still_held:
                logger.warning(
                    "Single-flight lease lost before the value was published",
                    extra={"action": "cache_lease_lost", "cache_key": truncate(key)},
                )
                return

    async def _land(self, key: str, ticket: _Ticket) -> None:
        try:
            if ticket.renewer is not None:
                ticket.renewer.cancel()
            if ticket.token is not None:
                try:
                    await self._adapter.release_lease(key, ticket.token)
                except CacheError:
                    # An unreleased lease expires by itself after lease_s.
                    pass
        finally:
            if ticket.local is not None:
                self._finish_local(key, ticket.local)

    def _finish_local(self, key: str, local: asyncio.Future[None]) -> None:
        if self._local.get(key) is local:
            del self._local[key]
        if not local.done():
            local.set_result(None)


def _remaining(deadline_s: float | None) -> float | None:
    if deadline_s is None:
        return None
    return max(0.0, deadline_s - asyncio.get_running_loop().time())
