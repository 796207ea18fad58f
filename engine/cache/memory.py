"""The in-process adapter: an LRU of encoded values with per-entry TTL.

Expiry is measured on ``time.monotonic`` (or an injected clock), so moving
the wall clock changes nothing. Eviction of the least recently used entry is
O(1); expired entries are dropped before any live one is evicted (a min-heap
of deadlines finds them in O(log n)), so they never count against
``max_size``. This module imports only other ``engine.cache`` modules.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable

from engine.cache.base import CacheAdapter
from engine.cache.constants import DEFAULT_MAX_SIZE
from engine.cache.serializers import MsgPackSerializer, Serializer, get_serializer

__all__ = ["MemoryCacheAdapter"]

Clock = Callable[[], float]


class MemoryCacheAdapter(CacheAdapter):
    """An LRU cache with TTL held in this process.

    Values are stored encoded, so every hit decodes a fresh copy and a caller
    mutating a returned value cannot change the cache.

    Args:
        max_size: Most live entries kept; ``None`` or ``0`` means unbounded.
        serializer: ``"msgpack"`` (default), ``"json"`` or a serializer.
        clock: Monotonic seconds; tests inject a controllable one.
    """

    def __init__(
        self,
        max_size: int | None = DEFAULT_MAX_SIZE,
        *,
        serializer: str | Serializer = "msgpack",
        clock: Clock = time.monotonic,
    ) -> None:
        if max_size is not None and (isinstance(max_size, bool) or max_size < 0):
            raise ValueError(
                f"max_size must be a positive number of entries, 0 or None "
                f"(unbounded), not {max_size!r}."
            )
        self.max_size = max_size or None
        self.serializer = (
            MsgPackSerializer()
            if serializer == "msgpack"
            else get_serializer(serializer)
        )
        self._clock = clock
        # key -> (data, deadline_s or None); order is recency, oldest first.
        self._entries: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._deadlines: list[tuple[float, str]] = []
        self._leases: dict[str, tuple[str, float]] = {}

    def __len__(self) -> int:
        """The number of live (unexpired) entries."""
        self._drop_expired()
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        """Return the bytes under ``key`` and mark it recently used."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] is not None and entry[1] <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[0]

    async def set(self, key: str, data: bytes, ttl_s: float | None) -> None:
        """Store ``data``; evict expired entries, then the LRU one, if full."""
        deadline_s = None if ttl_s is None else self._clock() + ttl_s
        self._entries[key] = (data, deadline_s)
        self._entries.move_to_end(key)
        if deadline_s is not None:
            heapq.heappush(self._deadlines, (deadline_s, key))
        if self.max_size is not None and len(self._entries) > self.max_size:
            self._drop_expired()
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
        self._compact_deadlines()

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True when a live entry was there."""
        entry = self._entries.pop(key, None)
        return entry is not None and (entry[1] is None or entry[1] > self._clock())

    async def exists(self, key: str) -> bool:
        """Whether a live entry is stored under ``key`` (recency unchanged)."""
        entry = self._entries.get(key)
        return entry is not None and (entry[1] is None or entry[1] > self._clock())

    async def clear(self) -> None:
        """Remove every entry and lease."""
        self._entries.clear()
        self._deadlines.clear()
        self._leases.clear()

    async def acquire_lease(self, key: str, token: str, lease_s: float) -> bool:
        """Take the lease on ``key`` unless a live lease is held."""
        now_s = self._clock()
        held = self._leases.get(key)
        if held is not None and held[1] > now_s:
            return False
        self._leases[key] = (token, now_s + lease_s)
        return True

    async def renew_lease(self, key: str, token: str, lease_s: float) -> bool:
        """Extend the lease if ``token`` still holds it."""
        held = self._leases.get(key)
        if held is None or held[0] != token or held[1] <= self._clock():
            return False
        self._leases[key] = (token, self._clock() + lease_s)
        return True

    async def release_lease(self, key: str, token: str) -> bool:
        """Drop the lease if ``token`` holds it."""
        held = self._leases.get(key)
        if held is None or held[0] != token:
            return False
        del self._leases[key]
        return True

    def _drop_expired(self) -> None:
        now_s = self._clock()
        while self._deadlines and self._deadlines[0][0] <= now_s:
            deadline_s, key = heapq.heappop(self._deadlines)
            entry = self._entries.get(key)
            # A heap record is stale when the key was rewritten since.
            if entry is not None and entry[1] == deadline_s:
                del self._entries[key]

    def _compact_deadlines(self) -> None:
        # Rewrites and deletions leave stale heap records; rebuild the heap
        # when they outnumber live entries so memory stays O(max_size).
        if len(self._deadlines) <= 2 * len(self._entries) + 64:
            return
        self._deadlines = [
            (entry[1], key)
            for key, entry in self._entries.items()
            if entry[1] is not None
        ]
        heapq.heapify(self._deadlines)
