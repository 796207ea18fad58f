"""RedisCacheAdapter against a real Redis: layout, TTLs, errors and outages."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis_support import REDIS_URL

from engine.cache import (
    AsyncCacheAdapter,
    CacheBackendError,
    CacheBackendUnavailableError,
    RedisCacheAdapter,
)
from engine.cache.redis import map_redis_error

pytestmark = pytest.mark.redis


async def task_func(x: int) -> int:
    return x


def _actions(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == action]


async def test_set_hands_the_ttl_to_redis(redis_client, key_prefix):
    adapter = RedisCacheAdapter(redis_client, key_prefix=key_prefix)
    cache = AsyncCacheAdapter(adapter=adapter, default_ttl=100)

    await cache.set(task_func, (1,), {}, "one")
    await cache.set(task_func, (2,), {}, "two", ttl=0)

    key_1 = adapter.value_key(cache.key_for(task_func, (1,), {}))
    key_2 = adapter.value_key(cache.key_for(task_func, (2,), {}))
    assert 99_000 < await redis_client.pttl(key_1) <= 100_000
    assert await redis_client.pttl(key_2) == -1


async def test_clear_removes_only_keys_under_the_prefix(redis_client, key_prefix):
    adapter = RedisCacheAdapter(redis_client, key_prefix=key_prefix + "mine:")
    await adapter.set("a", b"1", None)
    await redis_client.set(key_prefix + "other", b"kept")

    await adapter.clear()

    assert await adapter.get("a") is None
    assert await redis_client.get(key_prefix + "other") == b"kept"


async def test_a_url_gives_an_adapter_that_owns_its_client(key_prefix):
    adapter = RedisCacheAdapter(url=REDIS_URL, key_prefix=key_prefix)

    await adapter.set("a", b"1", 5)
    data = await adapter.get("a")
    await adapter.close()

    assert data == b"1"


async def test_clear_escapes_glob_characters_in_the_prefix(redis_client, key_prefix):
    adapter = RedisCacheAdapter(redis_client, key_prefix=key_prefix + "[x]*:")
    await adapter.set("a", b"1", None)
    await redis_client.set(key_prefix + "x-other", b"kept")

    await adapter.clear()

    assert await adapter.get("a") is None
    assert await redis_client.get(key_prefix + "x-other") == b"kept"


def test_the_adapter_rejects_a_client_that_decodes_responses():
    client = aioredis.Redis(decode_responses=True)

    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisCacheAdapter(client)


def test_the_adapter_rejects_both_a_client_and_a_url():
    with pytest.raises(ValueError, match="not both"):
        RedisCacheAdapter(aioredis.Redis(), url=REDIS_URL)


def test_the_adapter_rejects_an_unknown_serializer():
    with pytest.raises(ValueError, match="'yaml'"):
        RedisCacheAdapter(aioredis.Redis(), serializer="yaml")


def _all_redis_errors() -> list[type[BaseException]]:
    found = []
    for name in dir(redis_errors):
        value = getattr(redis_errors, name)
        if isinstance(value, type) and issubclass(value, redis_errors.RedisError):
            found.append(value)
    return found


UNAVAILABLE_ERRORS = {
    "AuthenticationError",
    "AuthorizationError",
    "BusyLoadingError",
    "ClusterDownError",
    "ConnectionError",
    "ExternalAuthProviderError",
    "MasterDownError",
    "MaxClientsReachedError",
    "MaxConnectionsError",
    "ReadOnlyError",
    "RedisClusterUnreachableError",
    "TimeoutError",
    "TryAgainError",
}


@pytest.mark.parametrize("error", _all_redis_errors(), ids=lambda e: e.__name__)
def test_every_redis_error_is_mapped(error):
    exc = error.__new__(error)  # Some constructors parse server replies.

    mapped = map_redis_error(exc, "GET")

    if error.__name__ in UNAVAILABLE_ERRORS:
        assert type(mapped) is CacheBackendUnavailableError
    else:
        assert type(mapped) is CacheBackendError
    assert mapped.command == "GET"
    assert str(mapped).endswith(".")


async def test_an_outage_gives_misses_one_warning_and_a_recovery(private_redis, caplog):
    adapter = RedisCacheAdapter(url=private_redis.url, retry_after_s=0.0)
    cache = AsyncCacheAdapter(adapter=adapter, default_ttl=60)
    assert await cache.set(task_func, (1,), {}, "one") is True
    caplog.set_level(logging.DEBUG, logger="engine.cache")

    private_redis.stop()
    results = [await cache.get(task_func, (1,), {}) for _ in range(5)]
    stored = [await cache.set(task_func, (2,), {}, "two") for _ in range(5)]

    assert results == [(False, None)] * 5
    assert stored == [False] * 5
    assert len(_actions(caplog, "cache_backend_unavailable")) == 1
    assert adapter.available is False

    private_redis.start()
    assert await _poll_until_stored(cache)
    assert len(_actions(caplog, "cache_backend_recovered")) == 1
    assert len(_actions(caplog, "cache_backend_unavailable")) == 1
    assert await cache.get(task_func, (3,), {}) == (True, "three")
    await adapter.close()


async def _poll_until_stored(cache: AsyncCacheAdapter) -> bool:
    # The restarted server is an external process: poll its observable state.
    for _ in range(200):
        if await cache.set(task_func, (3,), {}, "three"):
            return True
        await _pause()
    return False


async def _pause() -> None:
    await asyncio.sleep(0.02)


async def test_an_outage_warns_once_more_after_a_recovery(private_redis, caplog):
    adapter = RedisCacheAdapter(url=private_redis.url, retry_after_s=0.0)
    cache = AsyncCacheAdapter(adapter=adapter)
    caplog.set_level(logging.WARNING, logger="engine.cache")

    for _ in range(2):
        private_redis.stop()
        assert await cache.get(task_func, (1,), {}) == (False, None)
        private_redis.start()
        assert await _poll_until_stored(cache)

    assert len(_actions(caplog, "cache_backend_unavailable")) == 2
    assert len(_actions(caplog, "cache_backend_recovered")) == 2
    await adapter.close()


async def test_calls_fail_fast_between_probes(private_redis):
    adapter = RedisCacheAdapter(url=private_redis.url, retry_after_s=3600)
    private_redis.stop()

    with pytest.raises(CacheBackendUnavailableError):
        await adapter.get("a")
    with pytest.raises(CacheBackendUnavailableError, match="skipped"):
        await adapter.get("a")
    await adapter.close()
