"""The Redis adapter, on ``redis.asyncio``, with TTLs handed to Redis.

Keys are ``<key_prefix>v:<cache key>`` for values and ``<key_prefix>lease:
<cache key>`` for single-flight leases, so ``clear`` can remove exactly this
adapter's keys with ``SCAN`` and ``UNLINK`` (never ``FLUSHDB``). Redis errors
are translated in :func:`map_redis_error` and nowhere else. While Redis is
unreachable, calls fail fast for ``retry_after_s`` seconds before the next
probe; the outage and the recovery are each logged once.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from engine.cache.base import CacheAdapter
from engine.cache.constants import (
    REDIS_DEFAULT_URL,
    REDIS_KEY_PREFIX,
    REDIS_LEASE_NAMESPACE,
    REDIS_VALUE_NAMESPACE,
    truncate,
)
from engine.cache.errors import (
    CacheBackendError,
    CacheBackendUnavailableError,
    CacheError,
)
from engine.cache.serializers import Serializer, get_serializer

__all__ = ["RedisCacheAdapter", "map_redis_error"]

logger = logging.getLogger(__name__)

# Compare-and-act scripts: only the holder of a lease may extend or drop it.
_RENEW_LEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_LEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""

_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.MasterDownError,
    redis_errors.MaxConnectionsError,
    redis_errors.RedisClusterUnreachableError,
    redis_errors.ReadOnlyError,
    OSError,
)


def map_redis_error(exc: BaseException, command: str) -> CacheError:
    """Translate a ``redis`` (or socket) error into the cache's family.

    Errors that mean "Redis cannot serve us now" become
    :class:`CacheBackendUnavailableError`; every other Redis error becomes
    :class:`CacheBackendError`.
    """
    if isinstance(exc, _UNAVAILABLE):
        return CacheBackendUnavailableError(
            f"Redis cannot be reached for {command}: {type(exc).__name__}: "
            f"{truncate(str(exc))}.",
            command=command,
        )
    return CacheBackendError(
        f"Redis answered {command} with {type(exc).__name__}: {truncate(str(exc))}.",
        command=command,
    )


def _millis(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisCacheAdapter(CacheAdapter):
    """A cache shared by every process that reaches the same Redis.

    Args:
        client: A ``redis.asyncio.Redis`` made with ``decode_responses=False``
            (the default); the adapter never closes a client it was given.
        url: A ``redis://`` URL, used when no client is given; the adapter
            owns that client, which fails fast (no retries) when Redis is down.
        key_prefix: Prefix of every key the adapter writes.
        serializer: ``"msgpack"`` (default), ``"json"`` or a serializer.
        retry_after_s: After a failed call, how long calls answer "unavailable"
            without touching Redis before the next probe.

    Raises:
        ValueError: If both ``client`` and ``url`` are given, the prefix is
            empty, or the client decodes responses to ``str``.
    """

    def __init__(
        self,
        client: aioredis.Redis | None = None,
        *,
        url: str | None = None,
        key_prefix: str = REDIS_KEY_PREFIX,
        serializer: str | Serializer = "msgpack",
        retry_after_s: float = 1.0,
    ) -> None:
        if client is not None and url is not None:
            raise ValueError("Pass either a Redis client or url=, not both.")
        if not isinstance(key_prefix, str) or not key_prefix:
            raise ValueError(
                f"key_prefix must be a non-empty string, not {key_prefix!r}."
            )
        self._owns_client = client is None
        self.client = client if client is not None else self._connect(url)
        if self.client.get_connection_kwargs().get("decode_responses"):
            raise ValueError(
                "The Redis client decodes responses to str; the cache stores "
                "bytes, so create it with decode_responses=False."
            )
        self.key_prefix = key_prefix
        self.serializer = get_serializer(serializer)
        self.retry_after_s = retry_after_s
        self._down_since_s: float | None = None
        self._probe_at_s = 0.0
        self._renew = self.client.register_script(_RENEW_LEASE)
        self._release = self.client.register_script(_RELEASE_LEASE)

    @staticmethod
    def _connect(url: str | None) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            url or REDIS_DEFAULT_URL,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
        )

    @property
    def available(self) -> bool:
        """False between a failed call and the next successful one."""
        return self._down_since_s is None

    def value_key(self, key: str) -> str:
        """The Redis key holding the value of cache key ``key``."""
        return f"{self.key_prefix}{REDIS_VALUE_NAMESPACE}{key}"

    def lease_key(self, key: str) -> str:
        """The Redis key holding the single-flight lease of ``key``."""
        return f"{self.key_prefix}{REDIS_LEASE_NAMESPACE}{key}"

    async def get(self, key: str) -> bytes | None:
        """Return the bytes under ``key``, or ``None``."""
        result: bytes | None = await self._call(
            "GET", self.client.get, self.value_key(key)
        )
        return result

    async def set(self, key: str, data: bytes, ttl_s: float | None) -> None:
        """Store ``data``; Redis expires it after ``ttl_s`` seconds."""
        px = None if ttl_s is None else _millis(ttl_s)
        await self._call("SET", self.client.set, self.value_key(key), data, px=px)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""
        return bool(await self._call("DEL", self.client.delete, self.value_key(key)))

    async def exists(self, key: str) -> bool:
        """Whether ``key`` holds a value."""
        return bool(await self._call("EXISTS", self.client.exists, self.value_key(key)))

    async def clear(self) -> None:
        """Remove every key under ``key_prefix`` (values and leases)."""
        await self._call("SCAN", self._unlink_prefixed)

    async def acquire_lease(self, key: str, token: str, lease_s: float) -> bool:
        """``SET lease token NX PX``: True when this call took the lease."""
        taken = await self._call(
            "SET", self.client.set, self.lease_key(key), token,
            nx=True, px=_millis(lease_s),
        )  # fmt: skip
        return bool(taken)

    async def renew_lease(self, key: str, token: str, lease_s: float) -> bool:
        """Extend the lease if ``token`` still holds it."""
        keys = [self.lease_key(key)]
        args = [token, _millis(lease_s)]
        return bool(await self._call("EVALSHA", self._renew, keys=keys, args=args))

    async def release_lease(self, key: str, token: str) -> bool:
        """Drop the lease if ``token`` still holds it."""
        keys = [self.lease_key(key)]
        return bool(await self._call("EVALSHA", self._release, keys=keys, args=[token]))

    async def close(self) -> None:
        """Close the client if the adapter created it from a URL."""
        if self._owns_client:
            await self.client.aclose()

    async def _unlink_prefixed(self) -> int:
        pattern = _escape_glob(self.key_prefix) + "*"
        removed = 0
        batch: list[bytes] = []
        async for name in self.client.scan_iter(match=pattern, count=500):
            batch.append(name)
            if len(batch) >= 500:
                removed += await self.client.unlink(*batch)
                batch.clear()
        if batch:
            removed += await self.client.unlink(*batch)
        return removed

    async def _call(self, command: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        now_s = time.monotonic()
        if self._down_since_s is not None and now_s < self._probe_at_s:
            raise CacheBackendUnavailableError(
                f"Redis is unavailable; {command} was skipped until the next probe.",
                command=command,
            )
        try:
            result = await method(*args, **kwargs)
        except (redis_errors.RedisError, OSError) as exc:
            error = map_redis_error(exc, command)
            if isinstance(error, CacheBackendUnavailableError):
                self._mark_down(now_s, error)
            raise error from exc
        # A reply to a call sent before the outage began proves nothing.
        if self._down_since_s is not None and now_s >= self._down_since_s:
            self._mark_up(now_s)
        return result

    def _mark_down(self, now_s: float, error: CacheError) -> None:
        self._probe_at_s = now_s + self.retry_after_s
        if self._down_since_s is not None:
            return
        self._down_since_s = now_s
        logger.warning(
            "Cache backend unavailable",
            extra={
                "action": "cache_backend_unavailable",
                "backend": "redis",
                "key_prefix": self.key_prefix,
                "error": str(error),
            },
        )

    def _mark_up(self, now_s: float) -> None:
        outage_s = now_s - (self._down_since_s or now_s)
        self._down_since_s = None
        logger.warning(
            "Cache backend recovered after %.1f s",
            outage_s,
            extra={
                "action": "cache_backend_recovered",
                "backend": "redis",
                "key_prefix": self.key_prefix,
                "duration_s": round(outage_s, 3),
            },
        )


def _escape_glob(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
