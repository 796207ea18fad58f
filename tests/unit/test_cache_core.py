"""AsyncCacheAdapter over the memory adapter: the worker-facing behaviour."""

from __future__ import annotations

import asyncio
import logging

import pytest

import engine.cache
from engine.cache import (
    NEVER_EXPIRE,
    AsyncCache,
    AsyncCacheAdapter,
    CacheError,
    InvalidTTLError,
    MemoryCacheAdapter,
)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


async def compute(x, y=0):
    return x + y


def actions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "action", "") for r in caplog.records]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> AsyncCacheAdapter:
    return AsyncCacheAdapter(
        default_ttl=60, adapter=MemoryCacheAdapter(100, clock=clock)
    )


def test_all_names_match_the_public_surface():
    public = {n for n in dir(engine.cache) if not n.startswith("_")}
    modules = {
        "adapter", "base", "canonical", "constants", "core", "errors", "flight",
        "keys", "memory", "redis", "serializers", "annotations", "TYPE_CHECKING",
        "Any",
    }  # fmt: skip

    assert set(engine.cache.__all__) == public - modules | {"RedisCacheAdapter"}
    for name in engine.cache.__all__:
        assert getattr(engine.cache, name) is not None


async def test_a_stored_result_is_returned_as_a_copy(cache):
    await cache.set(compute, (1,), {"y": 2}, {"items": [1, 2]})

    hit, first = await cache.get(compute, (1,), {"y": 2})
    first["items"].append(3)
    _, second = await cache.get(compute, (1,), {"y": 2})

    assert hit is True
    assert second == {"items": [1, 2]}


async def test_a_result_mutated_after_set_does_not_change_the_cache(cache):
    result = [1]
    await cache.set(compute, (1,), {}, result)

    result.append(2)

    assert await cache.get(compute, (1,), {}) == (True, [1])


async def test_ttl_none_uses_the_default_ttl(cache, clock):
    await cache.set(compute, (1,), {}, "v")

    clock.now_s = 59.9
    assert (await cache.get(compute, (1,), {}))[0] is True
    clock.now_s = 60
    assert (await cache.get(compute, (1,), {}))[0] is False


async def test_ttl_zero_never_expires(cache, clock):
    await cache.set(compute, (1,), {}, "v", ttl=NEVER_EXPIRE)

    clock.now_s = 10**9

    assert await cache.get(compute, (1,), {}) == (True, "v")


async def test_a_default_ttl_of_none_never_expires(clock):
    cache = AsyncCacheAdapter(adapter=MemoryCacheAdapter(clock=clock))
    await cache.set(compute, (1,), {}, "v")

    clock.now_s = 10**9

    assert cache.default_ttl is None
    assert await cache.get(compute, (1,), {}) == (True, "v")


async def test_an_explicit_ttl_overrides_the_default(cache, clock):
    await cache.set(compute, (1,), {}, "v", ttl=5)

    clock.now_s = 5

    assert await cache.get(compute, (1,), {}) == (False, None)


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf"), True, "60"])
async def test_an_invalid_ttl_is_rejected_with_a_value_error(cache, bad):
    with pytest.raises(InvalidTTLError) as info:
        await cache.set(compute, (1,), {}, "v", ttl=bad)

    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, CacheError)
    assert repr(bad) in str(info.value)


def test_a_negative_default_ttl_is_rejected():
    with pytest.raises(ValueError, match="-5"):
        AsyncCacheAdapter(default_ttl=-5)
    with pytest.raises(ValueError, match="-5"):
        AsyncCacheAdapter().default_ttl = -5


async def test_a_value_over_the_size_limit_is_not_stored(caplog):
    cache = AsyncCacheAdapter(max_serialized_size=100)

    stored = await cache.set(compute, (1,), {}, "x" * 200)

    assert stored is False
    assert await cache.get(compute, (1,), {}) == (False, None)
    record = next(r for r in caplog.records if r.action == "cache_store_skipped")
    assert record.reason == "too_large"
    assert record.levelno == logging.WARNING


async def test_a_self_referencing_result_is_not_stored(cache, caplog):
    loop = []
    loop.append(loop)

    assert await cache.set(compute, (1,), {}, loop) is False
    record = next(r for r in caplog.records if r.action == "cache_store_skipped")
    assert record.reason == "unencodable"


async def test_an_unencodable_result_is_not_stored_and_says_why(cache, caplog):
    assert await cache.set(compute, (1,), {}, object()) is False

    record = next(r for r in caplog.records if r.action == "cache_store_skipped")
    assert "'object'" in record.getMessage()
    assert cache.stats.store_skipped == 1


async def test_a_disabled_cache_misses_and_skips_stores(cache):
    await cache.set(compute, (1,), {}, "v")
    cache.enabled = False

    assert await cache.get(compute, (1,), {}) == (False, None)
    assert await cache.set(compute, (2,), {}, "v") is False


async def test_temporarily_disabled_works_with_and_async_with(cache):
    await cache.set(compute, (1,), {}, "v")

    with cache.temporarily_disabled():
        assert await cache.get(compute, (1,), {}) == (False, None)
    async with cache._cache.temporarily_disabled():
        assert cache.enabled is False
        async with cache.temporarily_disabled():
            assert cache.enabled is False
        assert cache.enabled is False

    assert cache.enabled is True
    assert await cache.get(compute, (1,), {}) == (True, "v")


async def test_temporarily_disabled_restores_the_flag_after_an_error(cache):
    with pytest.raises(KeyError), cache.temporarily_disabled():
        raise KeyError("x")

    assert cache.enabled is True


async def test_invalidate_removes_one_entry(cache):
    await cache.set(compute, (1,), {}, "one")
    await cache.set(compute, (2,), {}, "two")

    assert await cache.invalidate(compute, (1,), {}) is True
    assert await cache.invalidate(compute, (1,), {}) is False
    assert await cache.get(compute, (2,), {}) == (True, "two")


async def test_a_result_is_reachable_by_its_entry_id(cache):
    await cache.set(compute, (1,), {}, "one", task_id="t-1")
    entry_id = cache.generate_entry_id("compute", "t-1")

    assert entry_id == "compute:t-1"
    assert await cache.get_by_task_id(entry_id) == (True, "one")
    assert await cache.invalidate_by_task_id(entry_id) is True
    assert await cache.get_by_task_id(entry_id) == (False, None)
    assert await cache.invalidate_by_task_id(entry_id) is False


async def test_a_hit_records_the_entry_id_of_the_task_it_served(cache):
    await cache.set(compute, (1,), {}, "one", task_id="first")

    await cache.get(compute, (1,), {}, task_id="second")

    assert await cache.get_by_task_id("compute:second") == (True, "one")


def test_a_missing_task_id_gives_an_unknown_entry_id():
    assert AsyncCacheAdapter.generate_entry_id(compute, None) == "compute:unknown"


async def test_clear_removes_entries_and_mappings(cache):
    await cache.set(compute, (1,), {}, "one", task_id="t")

    await cache.clear()

    assert await cache.get(compute, (1,), {}) == (False, None)
    assert cache._cache.entry_key("compute:t") is None


async def test_the_sweep_drops_mappings_of_expired_entries(cache, clock):
    await cache.set(compute, (1,), {}, "short", ttl=1, task_id="a")
    await cache.set(compute, (2,), {}, "long", task_id="b")
    clock.now_s = 2

    removed = await cache._cache.cleanup_stale_mappings()

    assert removed == 1
    assert cache._cache.entry_key("compute:a") is None
    assert cache._cache.entry_key("compute:b") is not None


async def test_entry_id_mappings_stay_within_max_size():
    cache = AsyncCacheAdapter(max_size=10)

    for i in range(100):
        await cache.set(compute, (i,), {}, i, task_id=str(i))

    assert len(cache._cache._entry_keys) == 10
    assert len(cache.adapter) == 10


async def test_the_cleanup_task_starts_and_stops_idempotently(cache):
    await cache.start_cleanup_task()
    await cache.start_cleanup_task()
    assert cache._cache.cleanup_running is True

    await cache.stop_cleanup_task()
    await cache.stop_cleanup_task()
    assert cache._cache.cleanup_running is False


async def test_a_cleanup_interval_of_zero_starts_no_task():
    cache = AsyncCacheAdapter(cleanup_interval=0)

    await cache.start_cleanup_task()

    assert cache._cache.cleanup_running is False
    with pytest.raises(ValueError, match="-1"):
        cache.cleanup_interval = -1


async def test_the_cleanup_loop_sweeps_on_its_interval(clock):
    cache = AsyncCacheAdapter(
        cleanup_interval=0.001, adapter=MemoryCacheAdapter(clock=clock)
    )
    await cache.set(compute, (1,), {}, "v", ttl=1, task_id="a")
    clock.now_s = 5
    swept = asyncio.Event()
    original = cache._cache.cleanup_stale_mappings

    async def observed() -> int:
        removed = await original()
        swept.set()
        return removed

    cache._cache.cleanup_stale_mappings = observed
    await cache.start_cleanup_task()
    await asyncio.wait_for(swept.wait(), timeout=5)
    await cache.close()

    assert cache._cache.entry_key("compute:a") is None


async def test_unreadable_cached_bytes_are_dropped_as_a_miss(cache, caplog):
    key = cache.key_for(compute, (1,), {})
    await cache.adapter.set(key, b"\xc1", None)

    assert await cache.get(compute, (1,), {}) == (False, None)
    assert "cache_value_unreadable" in actions(caplog)
    assert await cache.adapter.exists(key) is False


async def test_hits_and_misses_are_logged_at_debug(cache, caplog):
    caplog.set_level(logging.DEBUG, logger="engine.cache")
    await cache.set(compute, (1,), {}, "v")

    await cache.get(compute, (1,), {})
    await cache.get(compute, (2,), {})

    assert {"cache_hit", "cache_miss", "cache_stored"} <= set(actions(caplog))
    assert (cache.stats.hits, cache.stats.misses, cache.stats.stores) == (1, 1, 1)


def test_the_readme_alias_exposes_the_async_cache():
    cache = AsyncCacheAdapter(default_ttl=10, cleanup_interval=30)

    assert isinstance(cache._cache, AsyncCache)
    assert (cache.default_ttl, cache.cleanup_interval) == (10, 30)


def test_a_negative_size_limit_is_rejected():
    with pytest.raises(ValueError, match="-1"):
        AsyncCacheAdapter(max_serialized_size=-1)
