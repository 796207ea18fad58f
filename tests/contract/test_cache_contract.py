"""One contract, every cache backend: memory, Redis with msgpack, Redis with JSON.

Expiry is observed through a controllable clock on memory and by a bounded
poll on Redis (an external process whose clock we do not own).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from engine.cache import (
    NEVER_EXPIRE,
    AsyncCacheAdapter,
    CacheAdapter,
    InvalidTTLError,
    MemoryCacheAdapter,
    RedisCacheAdapter,
)

REDIS_URL = os.environ.get("TASKENGINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI") == "true"


@dataclass
class Backend:
    adapter: CacheAdapter
    wait_past: Callable[[float], Awaitable[None]]


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


async def _redis_client() -> aioredis.Redis:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no server"
        await client.aclose()
        if IN_CI:
            pytest.fail(f"Redis is required under CI=true: {exc!r}")
        pytest.skip(f"Redis is not available: {exc!r}")
    return client


@pytest.fixture(params=["memory", "redis-msgpack", "redis-json"])
async def backend(request) -> AsyncIterator[Backend]:
    """A fresh adapter of each backend, and a way to let time pass for it."""
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.now_s += seconds

        yield Backend(MemoryCacheAdapter(clock=clock), advance)
        return
    client = await _redis_client()
    prefix = f"taskengine-test:{uuid.uuid4().hex}:"
    serializer = request.param.removeprefix("redis-")
    adapter = RedisCacheAdapter(client, key_prefix=prefix, serializer=serializer)

    async def pass_time(seconds: float) -> None:
        await asyncio.sleep(seconds)

    yield Backend(adapter, pass_time)
    names = [name async for name in client.scan_iter(match=prefix + "*")]
    if names:
        await client.unlink(*names)
    await client.aclose()


async def compute(x):
    return x


VALUES = [
    {"nested": [1, (2, 3), {4, 5}], "when": dt.datetime(2024, 1, 2, tzinfo=dt.UTC)},
    (uuid.UUID(int=7), decimal.Decimal("3.14"), b"\x00raw", frozenset({"a"})),
    {1: "int key", (1, "t"): [None, True, 2.5, -(2**70)]},
    [dt.date(2024, 2, 29), dt.timedelta(hours=5), "text"],
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
async def test_values_round_trip_with_their_types(backend, value):
    cache = AsyncCacheAdapter(adapter=backend.adapter)

    assert await cache.set(compute, (1,), {}, value) is True
    hit, result = await cache.get(compute, (1,), {})

    assert hit is True
    assert result == value
    assert type(result) is type(value)


async def test_returned_values_are_copies(backend):
    cache = AsyncCacheAdapter(adapter=backend.adapter)
    await cache.set(compute, (1,), {}, {"items": [1]})

    _, first = await cache.get(compute, (1,), {})
    first["items"].append(2)

    assert await cache.get(compute, (1,), {}) == (True, {"items": [1]})


async def test_a_positive_ttl_expires(backend):
    cache = AsyncCacheAdapter(adapter=backend.adapter)
    await cache.set(compute, (1,), {}, "v", ttl=0.05)

    for _ in range(100):
        await backend.wait_past(0.05)
        if not (await cache.get(compute, (1,), {}))[0]:
            break

    assert await cache.get(compute, (1,), {}) == (False, None)


async def test_ttl_zero_and_a_default_of_none_never_expire(backend):
    cache = AsyncCacheAdapter(adapter=backend.adapter, default_ttl=None)
    await cache.set(compute, (1,), {}, "zero", ttl=NEVER_EXPIRE)
    await cache.set(compute, (2,), {}, "default")
    await cache.set(compute, (3,), {}, "short", ttl=0.05)

    for _ in range(100):
        await backend.wait_past(0.05)
        if not (await cache.get(compute, (3,), {}))[0]:
            break

    assert await cache.get(compute, (1,), {}) == (True, "zero")
    assert await cache.get(compute, (2,), {}) == (True, "default")


async def test_a_negative_ttl_is_rejected(backend):
    cache = AsyncCacheAdapter(adapter=backend.adapter)

    with pytest.raises(InvalidTTLError, match="-1"):
        await cache.set(compute, (1,), {}, "v", ttl=-1)


async def test_a_value_over_the_size_limit_is_skipped(backend):
    cache = AsyncCacheAdapter(adapter=backend.adapter, max_serialized_size=64)

    assert await cache.set(compute, (1,), {}, "x" * 100) is False
    assert await cache.get(compute, (1,), {}) == (False, None)


async def test_an_unencodable_value_is_skipped(backend):
    cache = AsyncCacheAdapter(adapter=backend.adapter)

    assert await cache.set(compute, (1,), {}, object()) is False


async def test_delete_exists_and_clear(backend):
    adapter = backend.adapter
    await adapter.set("a", b"1", None)
    await adapter.set("b", b"2", 60)

    assert await adapter.exists("a") is True
    assert await adapter.delete("a") is True
    assert await adapter.delete("a") is False
    await adapter.clear()
    assert await adapter.get("b") is None


async def test_leases_are_exclusive_and_owned(backend):
    adapter = backend.adapter

    assert await adapter.acquire_lease("k", "one", 30) is True
    assert await adapter.acquire_lease("k", "two", 30) is False
    assert await adapter.renew_lease("k", "two", 30) is False
    assert await adapter.release_lease("k", "two") is False
    assert await adapter.renew_lease("k", "one", 30) is True
    assert await adapter.release_lease("k", "one") is True
    assert await adapter.acquire_lease("k", "two", 30) is True


async def test_a_lease_expires(backend):
    adapter = backend.adapter
    await adapter.acquire_lease("k", "one", 0.05)

    for _ in range(100):
        await backend.wait_past(0.05)
        if await adapter.acquire_lease("k", "two", 30):
            break

    assert await adapter.release_lease("k", "two") is True


async def test_entry_ids_and_invalidation(backend):
    cache = AsyncCacheAdapter(adapter=backend.adapter)
    await cache.set(compute, (1,), {}, "v", task_id="t")

    assert await cache.get_by_task_id("compute:t") == (True, "v")
    assert await cache.invalidate(compute, (1,), {}) is True
    assert await cache.get_by_task_id("compute:t") == (False, None)


async def test_concurrent_identical_calls_compute_once(backend):
    cache = AsyncCacheAdapter(adapter=backend.adapter)
    calls = []
    computing, release = asyncio.Event(), asyncio.Event()

    async def run() -> object:
        async with cache.single_flight(compute, (1,), {}) as flight:
            if flight.hit:
                return flight.value
            calls.append(1)
            computing.set()
            await release.wait()
            await flight.publish("shared")
            return "shared"

    runs = [asyncio.create_task(run()) for _ in range(5)]
    await computing.wait()
    release.set()

    assert await asyncio.gather(*runs) == ["shared"] * 5
    assert len(calls) == 1
