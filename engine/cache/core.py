"""``AsyncCache``: keys, encoding, size limit, entry ids and single-flight.

The cache never raises into a task's path for a problem with a value or a
backend: an unencodable, self-referencing or oversized value is not stored
(one warning each time, action ``cache_store_skipped``), a key function that
fails makes a miss (``cache_key_invalid``), and a backend outage makes misses
(logged once by the adapter). Only :meth:`AsyncCache.key_for` raises key
errors, and only an invalid TTL raises :class:`InvalidTTLError`.
This module imports only other ``engine.cache`` modules.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from engine.cache.base import CacheAdapter
from engine.cache.constants import (
    DEFAULT_CLEANUP_INTERVAL_S,
    DEFAULT_LEASE_S,
    DEFAULT_MAX_SERIALIZED_SIZE,
    DEFAULT_MAX_SIZE,
    truncate,
    validate_ttl,
)
from engine.cache.errors import (
    CacheBackendError,
    CacheBackendUnavailableError,
    CacheError,
    SerializationError,
)
from engine.cache.flight import Flight, FlightRole, SingleFlight
from engine.cache.keys import (
    CacheKeyFn,
    build_context,
    default_key,
    func_name_of,
    make_key,
)
from engine.cache.memory import MemoryCacheAdapter

__all__ = ["AsyncCache", "CacheStats", "DisabledScope", "FuncRef"]

logger = logging.getLogger(__name__)

FuncRef = Any
"""A task function or its name; a function gives its module to the key."""


@dataclass(slots=True)
class CacheStats:
    """Counters since the cache was created, for reports at shutdown."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    store_skipped: int = 0
    backend_errors: int = 0


class DisabledScope:
    """Turns the cache off for a ``with`` or ``async with`` block."""

    def __init__(self, cache: AsyncCache) -> None:
        self._cache = cache
        self._previous: list[bool] = []

    def __enter__(self) -> None:
        self._previous.append(self._cache.enabled)
        self._cache.enabled = False

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cache.enabled = self._previous.pop()

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class AsyncCache:
    """A result cache over a :class:`CacheAdapter`.

    Args:
        adapter: The backend; a ``MemoryCacheAdapter(max_size)`` when None.
        default_ttl: Seconds an entry lives when a call gives ``ttl=None``;
            ``None`` or ``0`` (``NEVER_EXPIRE``) mean "never expire".
        enabled: When False, lookups miss and stores are skipped.
        max_serialized_size: Largest encoded value stored, in bytes.
        validate_keys: Also reject keys over 1024 characters or with control
            characters (non-string and empty keys are always rejected).
        cleanup_interval: Seconds between sweeps of stale entry-id mappings;
            ``0`` disables the sweep.
        max_entry_ids: Most entry-id mappings kept (oldest dropped first).

    Raises:
        InvalidTTLError: If ``default_ttl`` is negative or not a number.
        ValueError: If ``cleanup_interval`` or ``max_serialized_size`` is
            negative.
    """

    def __init__(
        self,
        adapter: CacheAdapter | None = None,
        default_ttl: float | None = None,
        enabled: bool = True,
        max_serialized_size: int = DEFAULT_MAX_SERIALIZED_SIZE,
        validate_keys: bool = False,
        cleanup_interval: float = DEFAULT_CLEANUP_INTERVAL_S,
        max_entry_ids: int = DEFAULT_MAX_SIZE,
    ) -> None:
        if max_serialized_size < 0:
            raise ValueError(
                f"max_serialized_size must be a number of bytes, not "
                f"{max_serialized_size!r}."
            )
        self.adapter = adapter if adapter is not None else MemoryCacheAdapter()
        self.default_ttl = default_ttl
        self.enabled = enabled
        self.max_serialized_size = max_serialized_size
        self.validate_keys = validate_keys
        self.cleanup_interval = cleanup_interval
        self.max_entry_ids = max(1, max_entry_ids)
        self.stats = CacheStats()
        self._entry_keys: OrderedDict[str, str] = OrderedDict()
        self._cleanup_task: asyncio.Task[None] | None = None
        self._flights = SingleFlight(self.adapter, self.get_by_key)

    @property
    def default_ttl(self) -> float | None:
        """Seconds an entry lives by default; ``None`` or ``0``: never expire."""
        return self._default_ttl

    @default_ttl.setter
    def default_ttl(self, value: float | None) -> None:
        validate_ttl(value, name="default_ttl")
        self._default_ttl = value

    @property
    def cleanup_interval(self) -> float:
        """Seconds between sweeps of stale entry-id mappings; 0: no sweep."""
        return self._cleanup_interval_s

    @cleanup_interval.setter
    def cleanup_interval(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(
                f"cleanup_interval must be 0 (no sweep) or a positive number of "
                f"seconds, not {value!r}."
            )
        self._cleanup_interval_s = value

    def key_for(
        self,
        func_name: FuncRef,
        args: tuple[Any, ...] | list[Any],
        kwargs: Mapping[str, Any] | None,
        cache_key_fn: CacheKeyFn | None = None,
        metadata: Mapping[str, Any] | None = None,
        entry_id: str | None = None,
    ) -> str:
        """Build the cache key of a call, raising on failure.

        Raises:
            CacheKeyFunctionError: If ``cache_key_fn`` raised.
            InvalidCacheKeyError: If the key is not a valid string, or the
                default key meets an argument with no canonical encoding.
        """
        name, qualified = func_name_of(func_name)
        if cache_key_fn is None and not self.validate_keys:
            return default_key(name, qualified, args, kwargs)
        context = build_context(name, args, kwargs, entry_id, metadata)
        context["qualified_name"] = qualified
        return make_key(context, cache_key_fn, validate=self.validate_keys)

    def try_key_for(
        self,
        func_name: FuncRef,
        args: tuple[Any, ...] | list[Any],
        kwargs: Mapping[str, Any] | None,
        cache_key_fn: CacheKeyFn | None,
        metadata: Mapping[str, Any] | None,
        entry_id: str | None,
    ) -> str | None:
        """Like :meth:`key_for`, but log a warning and return None on failure."""
        try:
            return self.key_for(
                func_name, args, kwargs, cache_key_fn, metadata, entry_id
            )
        except CacheError as exc:
            logger.warning(
                "Cache key could not be built, cache bypassed: %s",
                truncate(str(exc)),
                extra={
                    "action": "cache_key_invalid",
                    "func_name": func_name_of(func_name)[0],
                    "error_type": type(exc).__name__,
                },
            )
            return None

    async def get(
        self,
        func_name: FuncRef,
        args: tuple[Any, ...] | list[Any],
        kwargs: Mapping[str, Any] | None,
        cache_key_fn: CacheKeyFn | None = None,
        entry_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[bool, Any]:
        """Look a call up; ``(True, copy_of_value)`` or ``(False, None)``."""
        if not self.enabled:
            return False, None
        key = self.try_key_for(
            func_name, args, kwargs, cache_key_fn, metadata, entry_id
        )
        if key is None:
            return False, None
        hit, value = await self.get_by_key(key)
        if hit and entry_id is not None:
            self._remember(entry_id, key)
        return hit, value

    async def set(
        self,
        func_name: FuncRef,
        args: tuple[Any, ...] | list[Any],
        kwargs: Mapping[str, Any] | None,
        result: Any,
        ttl: float | None = None,
        cache_key_fn: CacheKeyFn | None = None,
        entry_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Store a call's result; True when stored.

        Raises:
            InvalidTTLError: If ``ttl`` is negative or not a number.
        """
        validate_ttl(ttl)
        if not self.enabled:
            return False
        key = self.try_key_for(
            func_name, args, kwargs, cache_key_fn, metadata, entry_id
        )
        if key is None:
            return False
        return await self.set_by_key(key, result, ttl, entry_id=entry_id)

    async def invalidate(
        self,
        func_name: FuncRef,
        args: tuple[Any, ...] | list[Any],
        kwargs: Mapping[str, Any] | None,
        cache_key_fn: CacheKeyFn | None = None,
        entry_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Remove a call's entry (even while disabled); True when one existed."""
        key = self.try_key_for(
            func_name, args, kwargs, cache_key_fn, metadata, entry_id
        )
        if key is None:
            return False
        return await self.invalidate_by_key(key)

    async def get_by_key(self, key: str) -> tuple[bool, Any]:
        """Look a key up; a backend error or unreadable bytes count as a miss."""
        if not self.enabled:
            return False, None
        try:
            data = await self.adapter.get(key)
        except CacheBackendError as exc:
            self._backend_failed(exc, key)
            data = None
        if data is None:
            self.stats.misses += 1
            logger.debug("Cache miss", extra={"action": "cache_miss", "cache_key": key})
            return False, None
        return await self._decode(key, data)

    async def _decode(self, key: str, data: bytes) -> tuple[bool, Any]:
        try:
            value = self.adapter.serializer.loads(data)
        except SerializationError as exc:
            logger.warning(
                "Cached value cannot be decoded and was dropped: %s",
                truncate(str(exc)),
                extra={"action": "cache_value_unreadable", "cache_key": key},
            )
            await self.invalidate_by_key(key)
            self.stats.misses += 1
            return False, None
        self.stats.hits += 1
        logger.debug("Cache hit", extra={"action": "cache_hit", "cache_key": key})
        return True, value

    async def set_by_key(
        self,
        key: str,
        value: Any,
        ttl: float | None = None,
        *,
        entry_id: str | None = None,
    ) -> bool:
        """Encode and store a value under a key; True when stored.

        Raises:
            InvalidTTLError: If ``ttl`` is negative or not a number.
        """
        ttl_s = validate_ttl(self._default_ttl if ttl is None else ttl)
        if not self.enabled:
            return False
        data = self._encode(key, value)
        if data is None:
            return False
        try:
            await self.adapter.set(key, data, ttl_s)
        except CacheBackendError as exc:
            self._backend_failed(exc, key)
            return False
        if entry_id is not None:
            self._remember(entry_id, key)
        self.stats.stores += 1
        logger.debug(
            "Cache stored",
            extra={"action": "cache_stored", "cache_key": key, "ttl_s": ttl_s},
        )
        return True

    def _encode(self, key: str, value: Any) -> bytes | None:
        try:
            data = self.adapter.serializer.dumps(value)
        except SerializationError as exc:
            self._skip_store(key, "unencodable", str(exc), type(value))
            return None
        if len(data) > self.max_serialized_size:
            reason = (
                f"The encoded value is {len(data)} bytes, over the "
                f"max_serialized_size of {self.max_serialized_size} bytes."
            )
            self._skip_store(key, "too_large", reason, type(value))
            return None
        return data

    def _skip_store(self, key: str, reason: str, detail: str, value_type: type) -> None:
        self.stats.store_skipped += 1
        logger.warning(
            "Result not cached (%s): %s",
            reason,
            truncate(detail),
            extra={
                "action": "cache_store_skipped",
                "reason": reason,
                "cache_key": truncate(key),
                "value_type": value_type.__qualname__,
            },
        )

    def _backend_failed(self, exc: CacheBackendError, key: str) -> None:
        self.stats.backend_errors += 1
        if isinstance(exc, CacheBackendUnavailableError):
            return  # The adapter logs an outage once, not once per call.
        logger.warning(
            "Cache backend error, treated as a miss: %s",
            truncate(str(exc)),
            extra={"action": "cache_backend_error", "cache_key": truncate(key)},
        )

    async def invalidate_by_key(self, key: str) -> bool:
        """Delete a key; True when a live entry was removed."""
        try:
            removed = await self.adapter.delete(key)
        except CacheBackendError as exc:
            self._backend_failed(exc, key)
            return False
        logger.debug(
            "Cache invalidated",
            extra={"action": "cache_invalidated", "cache_key": key},
        )
        return removed

    def entry_key(self, entry_id: str) -> str | None:
        """The cache key last recorded for ``entry_id``, if still mapped."""
        return self._entry_keys.get(entry_id)

    async def get_by_entry_id(self, entry_id: str) -> tuple[bool, Any]:
        """Look up the value recorded for an entry id."""
        key = self._entry_keys.get(entry_id)
        if key is None:
            return False, None
        return await self.get_by_key(key)

    async def invalidate_by_entry_id(self, entry_id: str) -> bool:
        """Delete the value recorded for an entry id, and the mapping."""
        key = self._entry_keys.pop(entry_id, None)
        if key is None:
            return False
        return await self.invalidate_by_key(key)

    def _remember(self, entry_id: str, key: str) -> None:
        self._entry_keys[entry_id] = key
        self._entry_keys.move_to_end(entry_id)
        while len(self._entry_keys) > self.max_entry_ids:
            self._entry_keys.popitem(last=False)

    async def clear(self) -> None:
        """Remove every entry of the adapter and every entry-id mapping."""
        self._entry_keys.clear()
        try:
            await self.adapter.clear()
        except CacheBackendError as exc:
            self._backend_failed(exc, "*")
            return
        logger.info("Cache cleared", extra={"action": "cache_cleared"})

    async def cleanup_stale_mappings(self) -> int:
        """Drop entry-id mappings whose value is gone; return how many.

        Stops early, keeping the rest, if the backend cannot answer.
        """
        removed = 0
        for entry_id, key in list(self._entry_keys.items()):
            try:
                alive = await self.adapter.exists(key)
            except CacheBackendError as exc:
                self._backend_failed(exc, key)
                break
            if not alive and self._entry_keys.get(entry_id) == key:
                del self._entry_keys[entry_id]
                removed += 1
        logger.debug(
            "Stale cache mappings swept",
            extra={"action": "cache_mappings_swept", "count": removed},
        )
        return removed

    async def start_cleanup_task(self) -> None:
        """Start the periodic sweep (no-op if running or the interval is 0)."""
        if self._cleanup_interval_s == 0:
            return
        if self._cleanup_task is not None and not self._cleanup_task.done():
            return
        self._cleanup_task = asyncio.create_task(
            self._cleanup_loop(), name="cache-cleanup"
        )

    async def stop_cleanup_task(self) -> None:
        """Stop the periodic sweep and wait for it to end (idempotent)."""
        task, self._cleanup_task = self._cleanup_task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    @property
    def cleanup_running(self) -> bool:
        """Whether the periodic sweep is scheduled."""
        return self._cleanup_task is not None and not self._cleanup_task.done()

    async def _cleanup_loop(self) -> None:
        while self._cleanup_interval_s > 0:
            await asyncio.sleep(self._cleanup_interval_s)
            try:
                await self.cleanup_stale_mappings()
            except Exception:
                logger.exception(
                    "Cache cleanup sweep failed",
                    extra={"action": "cache_cleanup_failed"},
                )

    def temporarily_disabled(self) -> DisabledScope:
        """Disable the cache inside a ``with`` or ``async with`` block.

        The flag is shared by every user of this cache while the block runs,
        and restored to its previous value when the block exits.
        """
        return DisabledScope(self)

    @asynccontextmanager
    async def single_flight(
        self,
        key: str,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        wait_timeout_s: float | None = None,
        entry_id: str | None = None,
    ) -> AsyncIterator[Flight]:
        """Elect one caller per key to compute a value the others then reuse.

        Yields a :class:`Flight`: on ``flight.hit`` use ``flight.value``;
        otherwise compute, then ``await flight.publish(value, ttl)``. When
        disabled, every caller gets ``BYPASS``. ``lease_s`` bounds how long a
        dead leader in another process can hold others up; ``wait_timeout_s``
        (None: wait while the leader lives) turns a waiter into ``BYPASS``.
        """
        if not self.enabled:
            yield Flight(key, FlightRole.BYPASS, None, self._publisher(entry_id))
            return
        async with self._flights.flight(
            key,
            self._publisher(entry_id),
            lease_s=lease_s,
            wait_timeout_s=wait_timeout_s,
        ) as flight:
            if flight.hit and entry_id is not None:
                self._remember(entry_id, key)
            yield flight

    def _publisher(self, entry_id: str | None) -> Any:
        async def publish(key: str, value: Any, ttl: float | None) -> bool:
            return await self.set_by_key(key, value, ttl, entry_id=entry_id)

        return publish

    async def close(self) -> None:
        """Stop the sweep and close connections the adapter opened."""
        await self.stop_cleanup_task()
        await self.adapter.close()
