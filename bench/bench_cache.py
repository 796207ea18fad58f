"""Cache benchmarks: print figures, assert nothing.

    .venv/bin/python bench/bench_cache.py [--redis-url URL] [--n N]

Figures: memory ``AsyncCacheAdapter.get`` hits per second; Redis adapter get
and set per second from one process (sequential round trips); entries and
traced memory of the memory adapter after 100,000 distinct sets with
``max_size=1000``; and, when ``engine.AsyncTaskWorker`` is importable, cache
hits served end to end through ``add_task``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import tracemalloc
import uuid
from typing import Any

import redis.asyncio as aioredis

from engine.cache import AsyncCacheAdapter, MemoryCacheAdapter, RedisCacheAdapter

RESULT = {"user": 123, "items": [1, 2, 3], "name": "benchmark"}


async def fetch_user(user_id: int, region: str = "eu") -> dict[str, Any]:
    """The task function whose results are cached."""
    return {"user_id": user_id, "region": region}


def report(label: str, count: int, elapsed_s: float) -> None:
    """Print one throughput figure."""
    print(
        f"{label:<48} {count / elapsed_s:>12,.0f} /s  ({count:,} in {elapsed_s:.2f} s)"
    )


async def bench_memory_hits(n: int) -> None:
    """Hits through AsyncCacheAdapter with the memory adapter."""
    cache = AsyncCacheAdapter(default_ttl=3600)
    await cache.set(fetch_user, (7,), {"region": "eu"}, RESULT)
    started_s = time.perf_counter()
    for _ in range(n):
        await cache.get(fetch_user, (7,), {"region": "eu"})
    report("memory AsyncCacheAdapter.get (hit)", n, time.perf_counter() - started_s)


async def bench_redis(url: str, n: int) -> None:
    """Sequential set and get through AsyncCacheAdapter on Redis."""
    client = aioredis.Redis.from_url(url)
    prefix = f"taskengine-bench:{uuid.uuid4().hex}:"
    cache = AsyncCacheAdapter(
        default_ttl=600, adapter=RedisCacheAdapter(client, key_prefix=prefix)
    )
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - report and skip the figure
        print(f"redis: skipped, {url} did not answer ({exc!r})")
        await client.aclose()
        return
    started_s = time.perf_counter()
    for i in range(n):
        await cache.set(fetch_user, (i,), {}, RESULT)
    report("redis AsyncCacheAdapter.set", n, time.perf_counter() - started_s)
    started_s = time.perf_counter()
    for i in range(n):
        await cache.get(fetch_user, (i,), {})
    report("redis AsyncCacheAdapter.get (hit)", n, time.perf_counter() - started_s)
    await cache.clear()
    await client.aclose()


async def bench_bounded_memory(n: int = 100_000, max_size: int = 1000) -> None:
    """Entries and traced memory after many distinct sets."""
    tracemalloc.start()
    adapter = MemoryCacheAdapter(max_size=max_size)
    cache = AsyncCacheAdapter(default_ttl=3600, adapter=adapter, max_size=max_size)
    baseline, _ = tracemalloc.get_traced_memory()
    started_s = time.perf_counter()
    for i in range(n):
        await cache.set(fetch_user, (i,), {}, RESULT, task_id=str(i))
    elapsed_s = time.perf_counter() - started_s
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    report(f"memory set, {n:,} distinct calls", n, elapsed_s)
    print(
        f"memory adapter after {n:,} distinct sets (max_size={max_size}): "
        f"{len(adapter):,} entries, {len(cache._cache._entry_keys):,} task-id "
        f"mappings, {(current - baseline) / 1024:,.0f} KiB traced "
        f"(peak {(peak - baseline) / 1024:,.0f} KiB)"
    )


async def bench_worker_hits(n: int) -> None:
    """Cache hits served end to end through ``add_task``, if the worker exists."""
    try:
        from engine import AsyncTaskWorker
    except ImportError:
        print("worker: skipped, engine.AsyncTaskWorker is not importable yet")
        return
    async with AsyncTaskWorker(cache_enabled=True, max_workers=10) as worker:
        first = await worker.add_task(fetch_user, 7, region="eu")
        await worker.wait_for_tasks([first], timeout=30)
        started_s = time.perf_counter()
        ids = [await worker.add_task(fetch_user, 7, region="eu") for _ in range(n)]
        await worker.wait_for_tasks(ids, timeout=600)
        elapsed_s = time.perf_counter() - started_s
        served = sum(
            1
            for task_id in ids
            if getattr(worker.get_task_info(task_id), "from_cache", False)
        )
    report("worker add_task cache hits (end to end)", n, elapsed_s)
    print(f"worker: {served:,} of {n:,} tasks served from the cache")


async def main() -> None:
    """Run every benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--n", type=int, default=20_000)
    options = parser.parse_args()
    # The end-to-end figure first, on a fresh heap: the other benchmarks leave
    # 100,000 entries' worth of garbage for the collector to walk.
    await bench_worker_hits(options.n)
    await bench_memory_hits(options.n * 5)
    await bench_redis(options.redis_url, options.n)
    await bench_bounded_memory()


if __name__ == "__main__":
    asyncio.run(main())
