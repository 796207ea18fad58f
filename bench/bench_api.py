"""Benchmarks of the HTTP API; prints figures, asserts nothing.

1. ``GET /tasks/{id}`` requests per second against ``taskengine serve``'s app
   run by uvicorn in a child process on 127.0.0.1, measured with ``wrk``
   when installed, else with a bounded concurrent httpx loop (the output
   says which).
2. SSE delivery latency: an event's ``at`` (recorded by the server when the
   task transition happened) to its receipt by an SSE client, median.
3. Cross-node SSE latency: two worker processes on one PostgreSQL database
   (created with a ``te_bench_`` name and dropped afterwards). Node B runs
   ``taskengine serve`` (``python -m engine.serve``) on 127.0.0.1 with an SSE
   client of this process on it; node A (this script with ``--node-a``) adds
   tasks one at a time. Reported: the call of ``add_task`` on A to the
   receipt of the task's ``queued`` event on B's stream, and the return of
   ``add_task`` (the event is committed) to that receipt. Both processes read
   the same wall clock. Skipped when PostgreSQL is unreachable.
4. In-process delivery through ``engine.bus`` to 100 subscribers.

Run: ``.venv/bin/python bench/bench_api.py [--only cluster]``. The PostgreSQL
server is ``$TASKENGINE_BENCH_POSTGRES_URL``, else
``postgresql://postgres@127.0.0.1:5432/postgres``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import asyncpg
import httpx

from engine.bus import EventManager

WRK_SECONDS = 5
WRK_CONNECTIONS = 32
HTTPX_REQUESTS = 20_000
HTTPX_CONCURRENCY = 32
LATENCY_TASKS = 200
BUS_SUBSCRIBERS = 100
BUS_EVENTS = 20_000
CLUSTER_TASKS = 300
POSTGRES_URL = os.environ.get(
    "TASKENGINE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(database: str = "memory://") -> Iterator[str]:
    """``taskengine serve`` (examples registered) in a child process."""
    port = _free_port()
    command = [
        sys.executable, "-m", "engine.serve", "--host", "127.0.0.1",
        "--port", str(port), "--database", database, "--log-level", "warning",
    ]  # fmt: skip
    child = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        child.terminate()
        child.wait(timeout=10)


def bench_get_with_wrk(url: str) -> tuple[str, float]:
    """``(tool, requests per second)`` for ``GET url``."""
    wrk = shutil.which("wrk")
    if wrk is not None:
        output = subprocess.run(
            [wrk, "-t2", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s", url],
            capture_output=True, text=True, check=True, timeout=WRK_SECONDS + 30,
        ).stdout  # fmt: skip
        match = re.search(r"Requests/sec:\s+([\d.]+)", output)
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        if non_2xx:
            raise RuntimeError(f"wrk saw {non_2xx.group(1)} error answers.")
        assert match is not None, output
        return f"wrk -t2 -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s", float(match.group(1))
    return "httpx loop", asyncio.run(_httpx_loop(url))


async def _httpx_loop(url: str) -> float:
    limits = httpx.Limits(max_connections=HTTPX_CONCURRENCY)
    async with httpx.AsyncClient(limits=limits) as client:
        remaining = iter(range(HTTPX_REQUESTS))

        async def one_connection() -> None:
            for _ in remaining:
                response = await client.get(url)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one_connection() for _ in range(HTTPX_CONCURRENCY)))
        return HTTPX_REQUESTS / (time.perf_counter() - started)


async def bench_sse_latency(url: str) -> list[float]:
    """Milliseconds from each event's ``at`` to its SSE receipt."""
    latencies: list[float] = []
    timeout = httpx.Timeout(30.0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        async with client.stream("GET", "/events?group_id=bench") as response:
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith("retry:"):
                    break
            for _ in range(LATENCY_TASKS):
                await client.post(
                    "/tasks",
                    json={"task_type": "echo", "metadata": {"group_id": "bench"}},
                )
                async for line in lines:
                    if not line.startswith("data: "):
                        continue
                    received = dt.datetime.now(dt.UTC)
                    event = json.loads(line[6:])
                    at = dt.datetime.fromisoformat(event["at"])
                    latencies.append((received - at).total_seconds() * 1000)
                    if event["type"] == "completed":
                        break
    return latencies


@contextmanager
def bench_database() -> Iterator[str]:
    """A fresh ``te_bench_`` database at the head revision, dropped after."""
    from engine.store.migrate import upgrade_database

    name = f"te_bench_{os.getpid()}"
    admin = POSTGRES_URL

    async def admin_sql(sql: str) -> None:
        connection = await asyncpg.connect(admin, timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
    try:
        url = admin.replace("postgresql://", "postgresql+asyncpg://", 1)
        url = url.rsplit("/", 1)[0] + f"/{name}"
        asyncio.run(upgrade_database(url))
        yield url
    finally:
        asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def node_a(url: str) -> None:
    """Node A: add one ``echo`` task per ``add`` line read from stdin.

    For each task it prints ``task_id called_at returned_at`` (wall clock,
    seconds) once ``add_task`` has returned, that is once it is committed.
    """
    import engine.examples  # noqa: F401 - registers "echo"
    from engine import AsyncTaskWorker

    loop = asyncio.get_running_loop()
    async with AsyncTaskWorker(max_workers=4, store=url, node_id="bench-a") as w:
        print("ready", flush=True)
        while (await loop.run_in_executor(None, sys.stdin.readline)).strip():
            called_at = time.time()
            task_id = await w.add_task("echo", metadata={"group_id": "xnode"})
            print(task_id, called_at, time.time(), flush=True)


async def _cluster_latency(url: str, node_b: str) -> tuple[list[float], list[float]]:
    command = [sys.executable, __file__, "--node-a", url]
    a = await asyncio.create_subprocess_exec(
        *command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert a.stdin is not None and a.stdout is not None
    try:
        assert await asyncio.wait_for(a.stdout.readline(), 30) == b"ready\n"
        async with (
            httpx.AsyncClient(base_url=node_b, timeout=30) as client,
            client.stream("GET", "/events?group_id=xnode") as response,
        ):
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith("retry:"):
                    break
            from_call: list[float] = []
            from_commit: list[float] = []
            for _ in range(CLUSTER_TASKS):
                a.stdin.write(b"add\n")
                received_at = await _queued_receipt(lines)
                task_id, called_at, returned_at = (await a.stdout.readline()).split()
                from_call.append((received_at - float(called_at)) * 1000)
                from_commit.append((received_at - float(returned_at)) * 1000)
                await _terminal(lines, task_id.decode())
    finally:
        a.stdin.close()
        await asyncio.wait_for(a.wait(), 30)
    return from_call, from_commit


async def _queued_receipt(lines: AsyncIterator[str]) -> float:
    async for line in lines:
        if line.startswith("data: ") and '"type": "queued"' in line:
            return time.time()
    raise RuntimeError("The SSE stream of node B ended.")


async def _terminal(lines: AsyncIterator[str], task_id: str) -> None:
    """Read B's stream until the task's last event, so the next add starts idle."""
    async for line in lines:
        if not line.startswith("data: "):
            continue
        event = json.loads(line[6:])
        if event["task_id"] == task_id and event["type"] in ("completed", "failed"):
            return
    raise RuntimeError("The SSE stream of node B ended.")


def bench_cluster() -> None:
    """Print the cross-node latency figures, or why they were skipped."""
    try:
        with bench_database() as url:
            with served(url) as node_b:
                from_call, from_commit = asyncio.run(_cluster_latency(url, node_b))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"Cross-node SSE latency: skipped, PostgreSQL unreachable ({exc}).")
        return
    for label, figures in (
        ("add_task called on A", from_call),
        ("add_task returned on A", from_commit),
    ):
        print(
            f"Cross-node SSE, {label} to receipt on B over {len(figures)} "
            f"events: median {statistics.median(figures):.2f} ms, p95 "
            f"{statistics.quantiles(figures, n=20)[-1]:.2f} ms (target 5 ms)"
        )


async def bench_bus() -> tuple[float, float]:
    """``(events/s, deliveries/s)`` for one publisher and 100 readers."""
    manager = EventManager(max_queue_size=BUS_EVENTS + 1)
    subscriptions = [manager.subscribe(None) for _ in range(BUS_SUBSCRIBERS)]

    async def read(queue: asyncio.Queue[dict]) -> None:
        for _ in range(BUS_EVENTS):
            await queue.get()

    readers = [asyncio.create_task(read(queue)) for _, queue in subscriptions]
    started = time.perf_counter()
    for i in range(BUS_EVENTS):
        manager.publish_event(f"e{i}", "g", {"position": i, "type": "progress"})
        if i % 500 == 0:
            await asyncio.sleep(0)
    await asyncio.gather(*readers)
    elapsed = time.perf_counter() - started
    return BUS_EVENTS / elapsed, BUS_EVENTS * BUS_SUBSCRIBERS / elapsed


def main() -> None:
    """Run the benchmarks and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["cluster"], default=None)
    parser.add_argument("--node-a", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node_a:
        asyncio.run(node_a(args.node_a))
        return
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if args.only == "cluster":
        bench_cluster()
        return
    with served() as url:
        created = httpx.post(f"{url}/tasks", json={"task_type": "echo"}).json()
        tool, rate = bench_get_with_wrk(f"{url}/tasks/{created['id']}")
        print(f"GET /tasks/{{id}}: {rate:,.0f} requests/s ({tool}; target 2,000)")
        latencies = asyncio.run(bench_sse_latency(url))
        print(
            f"SSE delivery, event 'at' to client receipt over {len(latencies)} "
            f"events: median {statistics.median(latencies):.2f} ms, p95 "
            f"{statistics.quantiles(latencies, n=20)[-1]:.2f} ms (target 5 ms)"
        )
    bench_cluster()
    events_s, deliveries_s = asyncio.run(bench_bus())
    print(
        f"engine.bus, {BUS_SUBSCRIBERS} subscribers: {events_s:,.0f} events/s "
        f"published and read, {deliveries_s:,.0f} deliveries/s (target 50,000)"
    )


if __name__ == "__main__":
    main()
