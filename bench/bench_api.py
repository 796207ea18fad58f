"""Benchmarks of the HTTP API; prints figures, asserts nothing.

1. ``GET /tasks/{id}`` requests per second against ``taskengine serve``'s app
   run by uvicorn in a child process on 127.0.0.1, measured with ``wrk``
   when installed, else with a bounded concurrent httpx loop (the output
   says which).
2. SSE delivery latency: an event's ``at`` (recorded by the server when the
   task transition happened) to its receipt by an SSE client, median.
3. In-process delivery through ``engine.bus`` to 100 subscribers.

Run: ``.venv/bin/python bench/bench_api.py``.
"""

from __future__ import annotations

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
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from engine.bus import EventManager

WRK_SECONDS = 5
WRK_CONNECTIONS = 32
HTTPX_REQUESTS = 20_000
HTTPX_CONCURRENCY = 32
LATENCY_TASKS = 200
BUS_SUBSCRIBERS = 100
BUS_EVENTS = 20_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served() -> Iterator[str]:
    """``taskengine serve`` (memory store, examples) in a child process."""
    port = _free_port()
    command = [
        sys.executable, "-m", "engine.serve", "--host", "127.0.0.1",
        "--port", str(port), "--database", "memory://", "--log-level", "warning",
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
    """Run the three benchmarks and print their figures."""
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
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
    events_s, deliveries_s = asyncio.run(bench_bus())
    print(
        f"engine.bus, {BUS_SUBSCRIBERS} subscribers: {events_s:,.0f} events/s "
        f"published and read, {deliveries_s:,.0f} deliveries/s (target 50,000)"
    )


if __name__ == "__main__":
    main()
