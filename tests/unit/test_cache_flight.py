"""Single-flight in one process, and between caches sharing one adapter."""

from __future__ import annotations

import asyncio

from engine.cache import AsyncCache, AsyncCacheAdapter, FlightRole, MemoryCacheAdapter


async def compute(x):
    return x


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


async def run_once(
    cache: AsyncCacheAdapter,
    computing: asyncio.Event,
    release: asyncio.Event,
    calls: list[int],
) -> tuple[FlightRole, object]:
    async with cache.single_flight(compute, (1,), {}, task_id="t") as flight:
        if flight.hit:
            return flight.role, flight.value
        calls.append(1)
        computing.set()
        await release.wait()
        await flight.publish({"answer": 42})
        return flight.role, {"answer": 42}


async def test_identical_concurrent_calls_compute_once():
    cache = AsyncCacheAdapter()
    computing, release, calls = asyncio.Event(), asyncio.Event(), []
    runs = [
        asyncio.create_task(run_once(cache, computing, release, calls))
        for _ in range(20)
    ]
    await computing.wait()

    release.set()
    results = await asyncio.gather(*runs)

    assert len(calls) == 1
    roles = [role for role, _ in results]
    assert roles.count(FlightRole.LEADER) == 1
    assert roles.count(FlightRole.HIT) == 19
    assert all(value == {"answer": 42} for _, value in results)


async def test_waiters_get_their_own_copies():
    cache = AsyncCacheAdapter()
    computing, release, calls = asyncio.Event(), asyncio.Event(), []
    runs = [
        asyncio.create_task(run_once(cache, computing, release, calls))
        for _ in range(3)
    ]
    await computing.wait()

    release.set()
    values = [value for _, value in await asyncio.gather(*runs)]

    assert values[1] is not values[2]


async def test_a_failed_leader_hands_over_to_one_waiter():
    cache = AsyncCacheAdapter()
    started = asyncio.Queue()
    outcome: dict[int, asyncio.Future[bool]] = {}

    async def attempt(n: int) -> FlightRole:
        async with cache.single_flight(compute, (1,), {}) as flight:
            if flight.hit:
                return flight.role
            outcome[n] = asyncio.get_running_loop().create_future()
            await started.put(n)
            if await outcome[n]:
                await flight.publish("done")
            return flight.role

    runs = [asyncio.create_task(attempt(n)) for n in range(5)]
    first = await started.get()
    outcome[first].set_result(False)
    second = await started.get()
    assert started.empty()
    outcome[second].set_result(True)
    roles = await asyncio.gather(*runs)

    assert roles.count(FlightRole.LEADER) == 2
    assert roles.count(FlightRole.HIT) == 3


async def test_a_leader_that_raises_wakes_the_waiters():
    cache = AsyncCacheAdapter()
    entered = asyncio.Event()

    async def failing() -> None:
        async with cache.single_flight(compute, (1,), {}):
            entered.set()
            raise RuntimeError("task failed")

    async def waiting() -> FlightRole:
        await entered.wait()
        async with cache.single_flight(compute, (1,), {}) as flight:
            return flight.role

    results = await asyncio.gather(failing(), waiting(), return_exceptions=True)

    assert isinstance(results[0], RuntimeError)
    assert results[1] is FlightRole.LEADER


async def test_a_cached_value_is_a_hit_without_election():
    cache = AsyncCacheAdapter()
    await cache.set(compute, (1,), {}, "cached")

    async with cache.single_flight(compute, (1,), {}) as flight:
        assert (flight.role, flight.value) == (FlightRole.HIT, "cached")
        assert await flight.publish("other") is False
        assert flight.key == cache.key_for(compute, (1,), {})


async def test_a_disabled_cache_bypasses_the_election():
    cache = AsyncCacheAdapter(enabled=False)

    async with cache.single_flight(compute, (1,), {}) as first:
        async with cache.single_flight(compute, (1,), {}) as second:
            roles = (first.role, second.role)

    assert roles == (FlightRole.BYPASS, FlightRole.BYPASS)


async def test_a_bad_key_bypasses_with_a_warning(caplog):
    cache = AsyncCacheAdapter()

    async with cache.single_flight(compute, (object(),), {}) as flight:
        assert (flight.role, flight.key) == (FlightRole.BYPASS, None)
        assert await flight.publish(1) is False

    assert any(r.action == "cache_key_invalid" for r in caplog.records)


async def test_a_waiter_bypasses_after_its_wait_timeout(caplog):
    cache = AsyncCacheAdapter()
    leading, release = asyncio.Event(), asyncio.Event()

    async def leader() -> None:
        async with cache.single_flight(compute, (1,), {}):
            leading.set()
            await release.wait()

    lead = asyncio.create_task(leader())
    await leading.wait()
    async with cache.single_flight(compute, (1,), {}, wait_timeout_s=0.01) as flight:
        role = flight.role
    release.set()
    await lead

    assert role is FlightRole.BYPASS
    assert any(r.action == "cache_flight_wait_timeout" for r in caplog.records)


async def test_caches_sharing_an_adapter_elect_one_leader():
    adapter = MemoryCacheAdapter()
    first, second = AsyncCache(adapter), AsyncCache(adapter)
    leading, release = asyncio.Event(), asyncio.Event()

    async def lead() -> FlightRole:
        async with first.single_flight("k") as flight:
            leading.set()
            await release.wait()
            await flight.publish("value")
            return flight.role

    async def follow() -> tuple[FlightRole, object]:
        await leading.wait()
        async with second.single_flight("k") as flight:
            return flight.role, flight.value

    follower = asyncio.create_task(follow())
    leader = asyncio.create_task(lead())
    await leading.wait()
    release.set()

    assert await leader is FlightRole.LEADER
    assert await follower == (FlightRole.HIT, "value")


async def test_a_dead_leaders_lease_expires_and_a_waiter_takes_over():
    clock = FakeClock()
    adapter = MemoryCacheAdapter(clock=clock)
    cache = AsyncCache(adapter)
    await adapter.acquire_lease("k", "dead-process", 30)

    async def waiter() -> FlightRole:
        async with cache.single_flight("k", lease_s=30) as flight:
            return flight.role

    task = asyncio.create_task(waiter())
    for _ in range(3):
        await asyncio.sleep(0.01)
    assert not task.done()
    clock.now_s = 31

    assert await asyncio.wait_for(task, timeout=5) is FlightRole.LEADER


async def test_the_leader_renews_its_lease_while_it_works():
    adapter = MemoryCacheAdapter()
    cache = AsyncCache(adapter)
    renewed = asyncio.Event()
    original = adapter.renew_lease

    async def observed(key: str, token: str, lease_s: float) -> bool:
        held = await original(key, token, lease_s)
        renewed.set()
        return held

    adapter.renew_lease = observed
    async with cache.single_flight("k", lease_s=0.03) as flight:
        await asyncio.wait_for(renewed.wait(), timeout=5)
        assert await adapter.acquire_lease("k", "intruder", 1) is False
        await flight.publish("v")

    assert await adapter.acquire_lease("k", "next", 1) is True


async def test_a_cancelled_waiter_leaves_no_election_behind():
    cache = AsyncCache()
    leading, release = asyncio.Event(), asyncio.Event()

    async def lead() -> None:
        async with cache.single_flight("k"):
            leading.set()
            await release.wait()

    leader = asyncio.create_task(lead())
    await leading.wait()
    waiter = asyncio.create_task(cache.single_flight("k").__aenter__())
    await asyncio.sleep(0)
    waiter.cancel()
    release.set()
    await leader

    async with cache.single_flight("k") as flight:
        assert flight.role is FlightRole.LEADER
