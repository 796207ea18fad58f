"""Cluster benchmark on this machine's PostgreSQL: enqueue rate, processing
rate of one and two node processes, and add_task to first line latency.
Figures are printed, never asserted.

    python bench/bench_pg_worker.py [--tasks N]

Each measurement uses its own database (``te_bench_...``), created and
dropped here. The server is ``TASKENGINE_BENCH_POSTGRES_URL`` (default
``postgresql://root@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

import asyncpg
import sqlalchemy as sa

from engine import AsyncTaskWorker, task
from engine.store.migrate import upgrade_database

ADMIN_URL = os.environ.get(
    "TASKENGINE_BENCH_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/postgres"
)
NODE = """
import asyncio, sys, time
from engine import AsyncTaskWorker, task

@task("bench_noop")
async def noop(i=0):
    return None

@task("bench_clock")
async def clock(i=0):
    return time.time()

async def main():
    worker = AsyncTaskWorker(max_workers=int(sys.argv[2]), store=sys.argv[1])
    await worker.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await worker.stop()

asyncio.run(main())
"""


@task("bench_noop")
async def noop(i: int = 0) -> None:
    return None


@task("bench_clock")
async def clock(i: int = 0) -> float:
    return time.time()


def _url(database: str) -> str:
    parsed = sa.engine.make_url(ADMIN_URL).set(
        drivername="postgresql+asyncpg", database=database
    )
    return parsed.render_as_string(hide_password=False)


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _fresh(name: str) -> str:
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{name}"')
    url = _url(name)
    await upgrade_database(url)
    return url


async def _producer(url: str) -> AsyncTaskWorker:
    """A worker that only enqueues: its node claims nothing."""
    worker = AsyncTaskWorker(max_workers=1, store=url)
    await worker.start()
    await worker.cluster.stop_claiming()
    worker.cluster._backlog = True  # bench only: no claim at birth either
    return worker


async def bench_enqueue(url: str, count: int) -> None:
    worker = await _producer(url)
    specs = [{"task_type": "bench_noop", "args": [i]} for i in range(1000)]
    started = time.perf_counter()
    for _ in range(count // 1000):
        await worker.add_tasks(specs)
    bulk = count // 1000 * 1000 / (time.perf_counter() - started)

    async def adder(n: int) -> None:
        for _ in range(n):
            await worker.add_task("bench_noop", 1)

    started = time.perf_counter()
    await asyncio.gather(*(adder(count // 400) for _ in range(200)))
    single = count // 400 * 200 / (time.perf_counter() - started)
    await worker.stop()
    print(
        f"  enqueue add_tasks (lists of 1,000): {bulk:>9,.0f} tasks/s (target 30,000)"
    )
    print(f"  enqueue add_task x200 concurrent:   {single:>9,.0f} tasks/s")


async def _nodes(url: str, count: int, max_workers: int) -> list:
    processes = []
    for _ in range(count):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", NODE, url, str(max_workers),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        processes.append(process)
    for process in processes:
        assert await process.stdout.readline() == b"ready\n"
    return processes


async def _stop(processes: list) -> None:
    for process in processes:
        process.stdin.write(b"\n")
    for process in processes:
        await process.wait()


async def bench_processing(name: str, count: int, node_count: int) -> float:
    url = await _fresh(name)
    worker = await _producer(url)
    specs = [{"task_type": "bench_noop", "args": [i]} for i in range(1000)]
    for _ in range(count // 1000):
        await worker.add_tasks(specs)
    await worker.stop()
    processes = await _nodes(url, node_count, 500)
    connection = await asyncpg.connect(ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = await connection.fetchval(
            "SELECT count(*) FROM task_events WHERE type = 'completed'"
        )
        if done >= count // 1000 * 1000:
            break
        await asyncio.sleep(0.2)
    first, last = await connection.fetchrow(
        "SELECT min(at) FILTER (WHERE type = 'started'), "
        "max(at) FILTER (WHERE type = 'completed') FROM task_events"
    )
    await connection.close()
    await _stop(processes)
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return done / (last - first).total_seconds()


async def bench_latency(url: str, samples: int) -> None:
    worker = AsyncTaskWorker(max_workers=10, store=url)
    await worker.start()
    local = []
    for i in range(samples):
        sent = time.time()
        task_id = await worker.add_task("bench_clock", i)
        local.append(await worker.get_task_future(task_id) - sent)
    await worker.stop()

    producer = await _producer(url)
    processes = await _nodes(url, 1, 10)
    remote = []
    for i in range(samples):
        sent = time.time()
        task_id = await producer.add_task("bench_clock", i)
        remote.append(await producer.get_task_future(task_id) - sent)
    await _stop(processes)
    await producer.stop()
    print(
        f"  add_task -> first line, same node:  median "
        f"{statistics.median(local) * 1e3:.2f} ms (target 1 ms)"
    )
    print(
        f"  add_task -> first line, other node: median "
        f"{statistics.median(remote) * 1e3:.2f} ms (target 2 ms)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("--samples", type=int, default=300)
    options = parser.parse_args()
    name = f"te_bench_{os.getpid()}"
    url = await _fresh(name)
    try:
        print("taskengine on PostgreSQL")
        await bench_enqueue(url, options.tasks)
        await bench_latency(url, options.samples)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for nodes in (1, 2):
        rate = await bench_processing(f"{name}_p{nodes}", options.tasks, nodes)
        target = "20,000" if nodes == 1 else "25,000"
        print(
            f"  processing, {nodes} node process(es): {rate:>9,.0f} tasks/s "
            f"(target {target})"
        )


if __name__ == "__main__":
    asyncio.run(main())
