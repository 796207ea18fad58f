"""A cluster node process for the tests: registers the shared task types,
starts a worker on the database given, prints ``ready``, and stops when its
standard input closes or says ``stop``.

Usage: python node_script.py URL NODE_ID MAX_WORKERS
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from engine import AsyncTaskWorker, task
from engine.store.postgres import asyncpg_dsn

POOL: asyncpg.Pool | None = None
NODE_ID = sys.argv[2]


@task("side_effect")
async def side_effect(key: str) -> str:
    assert POOL is not None
    await POOL.execute(
        "INSERT INTO side_effects (key, runs, node_id) VALUES ($1, 1, $2) "
        "ON CONFLICT (key) DO UPDATE SET runs = side_effects.runs + 1",
        key,
        NODE_ID,
    )
    return key


@task("sleepy")
async def sleepy(key: str, seconds: float) -> str:
    assert POOL is not None
    await POOL.execute(
        "INSERT INTO side_starts (key, node_id) VALUES ($1, $2)", key, NODE_ID
    )
    await asyncio.sleep(seconds)
    await POOL.execute(
        "INSERT INTO side_effects (key, runs, node_id) VALUES ($1, 1, $2) "
        "ON CONFLICT (key) DO UPDATE SET runs = side_effects.runs + 1",
        key,
        NODE_ID,
    )
    return key


async def main() -> None:
    global POOL
    url, max_workers = sys.argv[1], int(sys.argv[3])
    POOL = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=4)
    worker = AsyncTaskWorker(max_workers=max_workers, store=url, node_id=NODE_ID)
    await worker.start()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "stop":
            break
    await worker.stop(timeout=1.0)
    print("stopped", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
