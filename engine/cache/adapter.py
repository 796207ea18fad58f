"""``AsyncCacheAdapter``: the worker's view of the cache, in task terms.

It wraps an :class:`~engine.cache.core.AsyncCache` (reachable as ``_cache``,
as the README shows) and speaks of ``task_id``: a call given a ``task_id``
records the entry id ``generate_entry_id(func_name, task_id)`` so the result
can later be read or dropped with :meth:`AsyncCacheAdapter.get_by_task_id`.
This module imports only other ``engine.cache`` modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from engine.cache.base import CacheAdapter
from engine.cache.constants import (
    DEFAULT_CLEANUP_INTERVAL_S,
    DEFAULT_LEASE_S,
    DEFAULT_MAX_SERIALIZED_SIZE,
    DEFAULT_MAX_SIZE,
)
from engine.cache.core import AsyncCache, CacheStats, DisabledScope, FuncRef
from engine.cache.flight import Flight, FlightRole
from engine.cache.keys import CacheKeyFn, func_name_of
from engine.cache.memory import MemoryCacheAdapter

__all__ = ["AsyncCacheAdapter"]

Args = tuple[Any, ...] | list[Any]
Kwargs = Mapping[str, Any] | None
Metadata = Mapping[str, Any] | None


class AsyncCacheAdapter:
    """The result cache as the worker uses it.

    Args:
        default_ttl: Seconds an entry lives when a call gives ``ttl=None``;
            ``None`` or ``0`` (``NEVER_EXPIRE``): never expire.
        enabled: When False, lookups miss and stores are skipped.
        max_serialized_size: Largest encoded value stored, in bytes.
        validate_keys: Also reject over-long keys and control characters.
        cleanup_interval: Seconds between sweeps of stale task-id mappings;
            ``0`` disables the sweep.
        max_size: Entries of the default memory adapter, and the most task-id
            mappings kept.
        adapter: The backend; ``MemoryCacheAdapter(max_size)`` when None.
    """

    def __init__(
        self,
        default_ttl: float | None = None,
        enabled: bool = True,
        max_serialized_size: int = DEFAULT_MAX_SERIALIZED_SIZE,
        validate_keys: bool = False,
        cleanup_interval: float = DEFAULT_CLEANUP_INTERVAL_S,
        max_size: int = DEFAULT_MAX_SIZE,
        adapter: CacheAdapter | None = None,
    ) -> None:
        backend = adapter if adapter is not None else MemoryCacheAdapter(max_size)
        self._cache = AsyncCache(
            backend,
            default_ttl=default_ttl,
            enabled=enabled,
            max_serialized_size=max_serialized_size,
            validate_keys=validate_keys,
            cleanup_interval=cleanup_interval,
            max_entry_ids=max_size,
        )

    @staticmethod
    def generate_entry_id(func_name: FuncRef, task_id: str | None) -> str:
        """The entry id of a task's result: ``"<func_name>:<task_id>"``.

        A function is named by its ``__qualname__``; a missing task id reads
        ``"unknown"``.
        """
        name = func_name_of(func_name)[0]
        return f"{name}:{'unknown' if task_id is None else task_id}"

    def _entry_id(self, func_name: FuncRef, task_id: str | None) -> str | None:
        return None if task_id is None else self.generate_entry_id(func_name, task_id)

    @property
    def adapter(self) -> CacheAdapter:
        """The backend in use."""
        return self._cache.adapter

    @property
    def stats(self) -> CacheStats:
        """Hit, miss and store counters."""
        return self._cache.stats

    @property
    def enabled(self) -> bool:
        """Whether lookups and stores happen."""
        return self._cache.enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._cache.enabled = value

    @property
    def default_ttl(self) -> float | None:
        """Default TTL in seconds; ``None`` or ``0``: never expire."""
        return self._cache.default_ttl

    @default_ttl.setter
    def default_ttl(self, value: float | None) -> None:
        self._cache.default_ttl = value

    @property
    def cleanup_interval(self) -> float:
        """Seconds between sweeps of stale task-id mappings; 0: no sweep."""
        return self._cache.cleanup_interval

    @cleanup_interval.setter
    def cleanup_interval(self, value: float) -> None:
        self._cache.cleanup_interval = value

    def key_for(
        self,
        func_name: FuncRef,
        args: Args,
        kwargs: Kwargs,
        cache_key_fn: CacheKeyFn | None = None,
        metadata: Metadata = None,
        task_id: str | None = None,
    ) -> str:
        """The cache key of a call, as recorded in the log.

        Raises:
            CacheKeyFunctionError: If ``cache_key_fn`` raised.
            InvalidCacheKeyError: If no valid key can be built.
        """
        entry_id = self._entry_id(func_name, task_id)
        return self._cache.key_for(
            func_name, args, kwargs, cache_key_fn, metadata, entry_id
        )

    async def get(
        self,
        func_name: FuncRef,
        args: Args,
        kwargs: Kwargs,
        cache_key_fn: CacheKeyFn | None = None,
        task_id: str | None = None,
        metadata: Metadata = None,
    ) -> tuple[bool, Any]:
        """``(True, copy_of_result)`` on a hit, else ``(False, None)``."""
        entry_id = self._entry_id(func_name, task_id)
        return await self._cache.get(
            func_name, args, kwargs, cache_key_fn, entry_id, metadata
        )

    async def lookup(
        self,
        func_name: FuncRef,
        args: Args,
        kwargs: Kwargs,
        cache_key_fn: CacheKeyFn | None = None,
        task_id: str | None = None,
        metadata: Metadata = None,
    ) -> tuple[str | None, bool, Any]:
        """``(key, hit, value)`` with the key built once: the worker's fast
        path for a hit, before it pays for a single-flight election."""
        if not self.enabled:
            return None, False, None
        entry_id = self._entry_id(func_name, task_id)
        key = self._cache.try_key_for(
            func_name, args, kwargs, cache_key_fn, metadata, entry_id
        )
        if key is None:
            return None, False, None
        hit, value = await self._cache.get_by_key(key)
        if hit and entry_id is not None:
            self._cache._remember(entry_id, key)
        return key, hit, value

    async def set(
        self,
        func_name: FuncRef,
        args: Args,
        kwargs: Kwargs,
        result: Any,
        ttl: float | None = None,
        cache_key_fn: CacheKeyFn | None = None,
        task_id: str | None = None,
        metadata: Metadata = None,
    ) -> bool:
        """Store a result; True when stored (False, logged, when it cannot be).

        Raises:
            InvalidTTLError: If ``ttl`` is negative or not a number.
        """
        entry_id = self._entry_id(func_name, task_id)
        return await self._cache.set(
            func_name, args, kwargs, result, ttl, cache_key_fn, entry_id, metadata
        )

    async def invalidate(
        self,
        func_name: FuncRef,
        args: Args,
        kwargs: Kwargs,
        cache_key_fn: CacheKeyFn | None = None,
        task_id: str | None = None,
        metadata: Metadata = None,
    ) -> bool:
        """Remove a call's cached result; True when one was removed."""
        entry_id = self._entry_id(func_name, task_id)
        return await self._cache.invalidate(
            func_name, args, kwargs, cache_key_fn, entry_id, metadata
        )

    async def get_by_task_id(self, entry_id: str) -> tuple[bool, Any]:
        """Read the result recorded under ``generate_entry_id(...)``."""
        return await self._cache.get_by_entry_id(entry_id)

    async def invalidate_by_task_id(self, entry_id: str) -> bool:
        """Remove the result recorded under ``generate_entry_id(...)``."""
        return await self._cache.invalidate_by_entry_id(entry_id)

    async def clear(self) -> None:
        """Remove every cached result and mapping."""
        await self._cache.clear()

    async def start_cleanup_task(self) -> None:
        """Start the periodic sweep of stale task-id mappings."""
        await self._cache.start_cleanup_task()

    async def stop_cleanup_task(self) -> None:
        """Stop the periodic sweep."""
        await self._cache.stop_cleanup_task()

    def temporarily_disabled(self) -> DisabledScope:
        """Disable the cache inside a ``with`` or ``async with`` block."""
        return self._cache.temporarily_disabled()

    @asynccontextmanager
    async def single_flight(
        self,
        func_name: FuncRef,
        args: Args,
        kwargs: Kwargs,
        cache_key_fn: CacheKeyFn | None = None,
        task_id: str | None = None,
        metadata: Metadata = None,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        wait_timeout_s: float | None = None,
    ) -> AsyncIterator[Flight]:
        """Compute identical calls once, here and in other processes.

        ``flight.hit``: use ``flight.value`` (``flight.key`` is the key to
        log). Otherwise compute and ``await flight.publish(result, ttl)``. A
        key that cannot be built yields ``BYPASS`` with ``key=None`` (and a
        warning). See :meth:`AsyncCache.single_flight`.
        """
        entry_id = self._entry_id(func_name, task_id)
        key = self._cache.try_key_for(
            func_name, args, kwargs, cache_key_fn, metadata, entry_id
        )
        if key is None:
            yield Flight(None, FlightRole.BYPASS)
            return
        async with self._cache.single_flight(
            key, lease_s=lease_s, wait_timeout_s=wait_timeout_s, entry_id=entry_id
        ) as flight:
            yield flight

    async def close(self) -> None:
        """Stop the sweep and close connections the adapter opened."""
        await self._cache.close()
