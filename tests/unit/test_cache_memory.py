"""MemoryCacheAdapter: LRU order, monotonic TTL, bounded size and leases."""

from __future__ import annotations

import time

import pytest

from engine.cache import MemoryCacheAdapter


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_the_least_recently_used_entry_is_evicted(clock):
    adapter = MemoryCacheAdapter(max_size=2, clock=clock)
    await adapter.set("a", b"1", None)
    await adapter.set("b", b"2", None)

    await adapter.get("a")
    await adapter.set("c", b"3", None)

    assert await adapter.get("b") is None
    assert await adapter.get("a") == b"1"
    assert await adapter.get("c") == b"3"


async def test_an_entry_expires_after_its_ttl_on_the_monotonic_clock(clock):
    adapter = MemoryCacheAdapter(clock=clock)
    await adapter.set("a", b"1", 10)

    clock.advance(9.999)
    assert await adapter.get("a") == b"1"
    clock.advance(0.001)
    assert await adapter.get("a") is None


async def test_no_ttl_means_the_entry_never_expires(clock):
    adapter = MemoryCacheAdapter(clock=clock)
    await adapter.set("a", b"1", None)

    clock.advance(10**9)

    assert await adapter.get("a") == b"1"


async def test_a_wall_clock_jump_changes_no_expiry(monkeypatch):
    adapter = MemoryCacheAdapter()
    await adapter.set("a", b"1", 60)

    monkeypatch.setattr(time, "time", lambda: 4_102_444_800.0)

    assert adapter._clock is time.monotonic
    assert await adapter.get("a") == b"1"


async def test_expired_entries_do_not_count_against_the_size(clock):
    adapter = MemoryCacheAdapter(max_size=2, clock=clock)
    await adapter.set("short", b"1", 1)
    await adapter.set("kept", b"2", None)
    await adapter.get("short")

    clock.advance(2)
    await adapter.set("new", b"3", None)

    assert await adapter.get("kept") == b"2"
    assert await adapter.get("new") == b"3"
    assert len(adapter) == 2


async def test_len_counts_only_live_entries(clock):
    adapter = MemoryCacheAdapter(clock=clock)
    await adapter.set("a", b"1", 1)
    await adapter.set("b", b"2", None)

    clock.advance(5)

    assert len(adapter) == 1


async def test_rewriting_a_key_resets_its_ttl(clock):
    adapter = MemoryCacheAdapter(clock=clock)
    await adapter.set("a", b"1", 1)

    await adapter.set("a", b"2", None)
    clock.advance(5)
    await adapter.set("b", b"3", 1)
    len(adapter)

    assert await adapter.get("a") == b"2"


async def test_many_distinct_sets_stay_within_max_size(clock):
    adapter = MemoryCacheAdapter(max_size=1000, clock=clock)

    for i in range(20_000):
        await adapter.set(f"k{i}", b"v", 60 if i % 2 else None)
        await adapter.delete(f"k{i - 5}")

    assert len(adapter._entries) <= 1000
    assert len(adapter._deadlines) <= 2 * 1000 + 64


async def test_delete_and_exists_ignore_expired_entries(clock):
    adapter = MemoryCacheAdapter(clock=clock)
    await adapter.set("a", b"1", 1)
    await adapter.set("b", b"2", None)
    clock.advance(2)

    assert await adapter.exists("a") is False
    assert await adapter.delete("a") is False
    assert await adapter.exists("b") is True
    assert await adapter.delete("b") is True
    assert await adapter.delete("b") is False


async def test_a_lease_is_exclusive_until_released_or_expired(clock):
    adapter = MemoryCacheAdapter(clock=clock)

    assert await adapter.acquire_lease("k", "one", 10) is True
    assert await adapter.acquire_lease("k", "two", 10) is False
    assert await adapter.release_lease("k", "two") is False
    assert await adapter.renew_lease("k", "one", 10) is True

    clock.advance(10)
    assert await adapter.renew_lease("k", "one", 10) is False
    assert await adapter.acquire_lease("k", "two", 10) is True
    assert await adapter.release_lease("k", "two") is True
    assert await adapter.acquire_lease("k", "three", 10) is True


async def test_clear_removes_entries_and_leases(clock):
    adapter = MemoryCacheAdapter(clock=clock)
    await adapter.set("a", b"1", 5)
    await adapter.acquire_lease("a", "t", 5)

    await adapter.clear()

    assert await adapter.get("a") is None
    assert await adapter.acquire_lease("a", "u", 5) is True


def test_a_negative_max_size_is_rejected():
    with pytest.raises(ValueError, match="-1"):
        MemoryCacheAdapter(max_size=-1)


async def test_max_size_zero_means_unbounded(clock):
    adapter = MemoryCacheAdapter(max_size=0, clock=clock)

    for i in range(50):
        await adapter.set(str(i), b"v", None)

    assert len(adapter) == 50
