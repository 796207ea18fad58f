"""Single-flight across real processes sharing one Redis."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from redis_support import REDIS_URL

from engine.cache import AsyncCache, FlightRole, RedisCacheAdapter

pytestmark = pytest.mark.redis


# Each child elects on the key "job"; a leader counts its computation in
# Redis and waits for the test's "go" key before publishing its result. A
# leader meant to be killed ("hang") holds a short lease, so the take-over
# is quick; otherwise the lease is long enough that a leader stalled by a
# saturated machine keeps it (a lease only protects against dead leaders).
CHILD = """
import asyncio, json, sys
import redis.asyncio as aioredis
from engine.cache import AsyncCache, RedisCacheAdapter

async def main(url, prefix, hang):
    client = aioredis.Redis.from_url(url)
    cache = AsyncCache(RedisCacheAdapter(client, key_prefix=prefix))
    print("entering", flush=True)
    async with cache.single_flight("job", lease_s=1.0 if hang else 10.0) as flight:
        if flight.leader:
            await client.incr(prefix + "computations")
            print("leading", flush=True)
            while hang or not await client.exists(prefix + "go"):
                await asyncio.sleep(0.01)
            await flight.publish({"result": 42})
            value = {"result": 42}
        else:
            value = flight.value
    print(json.dumps({"role": flight.role.value, "value": value}), flush=True)
    await client.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] == "hang"))
"""


_children: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
async def _no_child_left():
    # A failed test must not leave a child waiting forever for its "go" key.
    yield
    while _children:
        child = _children.pop()
        if child.returncode is None:
            child.kill()
            await child.wait()


async def spawn(prefix: str, mode: str = "normal") -> asyncio.subprocess.Process:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, REDIS_URL, prefix, mode,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _children.append(child)
    return child


async def read_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
    return line.decode().strip()


async def wait_for_counter(redis_client, name: str, expected: int) -> None:
    # Children are external processes: poll their observable state, bounded.
    for _ in range(1000):
        if int(await redis_client.get(name) or 0) == expected:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never reached {expected}.")


async def test_two_processes_compute_once_and_share_the_result(
    redis_client, key_prefix
):
    children = [await spawn(key_prefix) for _ in range(2)]
    for child in children:
        assert await read_line(child) == "entering"

    await wait_for_counter(redis_client, key_prefix + "computations", 1)
    await redis_client.set(key_prefix + "go", b"1")
    outputs = []
    for child in children:
        line = await read_line(child)
        if line == "leading":
            line = await read_line(child)
        outputs.append(json.loads(line))
        assert await child.wait() == 0

    assert int(await redis_client.get(key_prefix + "computations")) == 1
    assert sorted(o["role"] for o in outputs) == ["hit", "leader"]
    assert all(o["value"] == {"result": 42} for o in outputs)


async def test_a_killed_leader_process_does_not_block_the_waiters(
    redis_client, key_prefix
):
    child = await spawn(key_prefix, "hang")
    assert await read_line(child) == "entering"
    assert await read_line(child) == "leading"
    cache = AsyncCache(RedisCacheAdapter(redis_client, key_prefix=key_prefix))

    child.kill()
    await child.wait()
    loop = asyncio.get_running_loop()
    started_s = loop.time()
    async with cache.single_flight("job", lease_s=1.0) as flight:
        role = flight.role
        await flight.publish("recomputed")
    waited_s = loop.time() - started_s

    assert role is FlightRole.LEADER
    assert waited_s < 5
    assert await cache.get_by_key("job") == (True, "recomputed")


async def test_the_lease_is_released_when_the_leader_leaves(redis_client, key_prefix):
    adapter = RedisCacheAdapter(redis_client, key_prefix=key_prefix)
    cache = AsyncCache(adapter)

    async with cache.single_flight("job") as flight:
        assert await redis_client.exists(adapter.lease_key("job")) == 1
        await flight.publish("v")

    assert await redis_client.exists(adapter.lease_key("job")) == 0


async def test_a_redis_outage_degrades_to_an_in_process_leader(private_redis):
    adapter = RedisCacheAdapter(url=private_redis.url, retry_after_s=0.0)
    cache = AsyncCache(adapter)
    private_redis.stop()

    async with cache.single_flight("job") as flight:
        role = flight.role
        stored = await flight.publish("v")
    await adapter.close()

    assert role is FlightRole.LEADER
    assert stored is False
