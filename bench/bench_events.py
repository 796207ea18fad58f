"""Measure the in-process event bus: publish cost, delivery rate and memory.

Prints figures only; nothing here asserts. Run with
``.venv/bin/python bench/bench_events.py [--events N]``.

"Published/s" counts ``publish_event`` calls; "delivered/s" counts events
taken off subscriber queues by reading tasks, summed over subscribers, with
the clock stopped when the last subscriber has read the last event.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import time
import tracemalloc
from typing import Any

import psutil

from engine.bus import EventManager, SubscriberQueue

BATCH = 1_000


def make_events(n: int) -> list[tuple[str, str, dict[str, Any]]]:
    """Build ``n`` worker-shaped events of 100 tasks, ahead of timing."""
    events = []
    for position in range(1, n + 1):
        task_id = f"task-{position % 100}"
        event_id = f"event-{position}"
        data = {
            "event_id": event_id,
            "position": position,
            "task_id": task_id,
            "version": position // 100 + 1,
            "type": "progress",
            "status": "running",
            "progress": 0.5,
            "at": "2024-01-01T00:00:00+00:00",
            "group_id": task_id,
        }
        events.append((event_id, task_id, data))
    return events


def bench_no_subscribers(n: int) -> float:
    """Return publishes per second with nobody subscribed."""
    manager = EventManager()
    events = make_events(n)
    publish = manager.publish_event

    started_s = time.perf_counter()
    for event_id, group_id, data in events:
        publish(event_id, group_id, data)
    return n / (time.perf_counter() - started_s)


async def read(queue: asyncio.Queue[dict[str, Any]], n: int) -> int:
    """Take ``n`` events off ``queue``; return how many were overflow markers."""
    markers = 0
    for _ in range(n):
        event = await queue.get()
        markers += event.get("type") == "overflow"
    return markers


async def read_batches(queue: SubscriberQueue, n: int) -> int:
    """Take ``n`` events off ``queue`` with ``get_batch``; count the markers."""
    markers = 0
    taken = 0
    while taken < n:
        batch = await queue.get_batch(BATCH)
        taken += len(batch)
        markers += sum(event.get("type") == "overflow" for event in batch[-1:])
    return markers


async def bench_subscribers(
    subscribers: int, n: int, batched: bool = False
) -> tuple[float, float, int]:
    """Return published/s, delivered/s and markers seen, all readers reading.

    Readers take events one by one with ``get()``, or with ``get_batch``
    when ``batched``.
    """
    manager = EventManager()
    events = make_events(n)
    queues = [manager.subscribe()[1] for _ in range(subscribers)]
    reader = read_batches if batched else read
    readers = [asyncio.create_task(reader(queue, n)) for queue in queues]
    publish = manager.publish_event

    started_s = time.perf_counter()
    for start in range(0, n, BATCH):
        for event_id, group_id, data in events[start : start + BATCH]:
            publish(event_id, group_id, data)
        # Let the readers run between batches, as a worker's awaits would.
        await asyncio.sleep(0)
    markers = sum(await asyncio.gather(*readers))
    elapsed_s = time.perf_counter() - started_s
    return n / elapsed_s, n * subscribers / elapsed_s, markers


def bench_stalled_rate(n: int) -> float:
    """Return publishes per second while one subscriber never reads."""
    manager = EventManager()
    events = make_events(n)
    _, stalled = manager.subscribe()
    publish = manager.publish_event

    started_s = time.perf_counter()
    for event_id, group_id, data in events:
        publish(event_id, group_id, data)
    elapsed_s = time.perf_counter() - started_s
    del stalled
    return n / elapsed_s


def bench_stalled_subscriber(n: int) -> dict[str, float]:
    """Publish ``n`` fresh events to a subscriber that never reads.

    Reports memory still allocated afterwards (tracemalloc, which also slows
    publishing down) and the growth of the process's resident set.
    """
    process = psutil.Process(os.getpid())
    gc.collect()
    rss_before = process.memory_info().rss
    tracemalloc.start()
    manager = EventManager()
    _, stalled = manager.subscribe()
    publish = manager.publish_event

    for position in range(1, n + 1):
        publish(f"stalled-{position}", "g", {"position": position, "type": "x"})

    traced, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "queued": stalled.qsize(),
        "dropped": stalled.dropped,
        "traced_mib": traced / 2**20,
        "peak_mib": peak / 2**20,
        "rss_growth_mib": (process.memory_info().rss - rss_before) / 2**20,
    }


async def main(n: int) -> None:
    """Run every measurement and print one line per figure."""
    print(f"events per run: {n:,}")
    rate = bench_no_subscribers(n)
    print(f"  0 subscribers: {rate:12,.0f} published/s ({1e6 / rate:.2f} us each)")
    for subscribers, batched in ((1, False), (10, False), (100, False), (100, True)):
        count = max(BATCH, n // max(1, subscribers // 10))
        published, delivered, markers = await bench_subscribers(
            subscribers, count, batched
        )
        how = "get_batch" if batched else "get()"
        print(
            f"{subscribers:3d} subscribers, {how:9s}: {published:12,.0f} "
            f"published/s {delivered:12,.0f} delivered/s  ({count:,} events, "
            f"{markers} overflow markers)"
        )

    rate = bench_stalled_rate(n)
    print(f"  1 subscriber that never reads: {rate:12,.0f} published/s")
    stalled = bench_stalled_subscriber(100_000)
    print(
        "never-reading subscriber after 100,000 publishes: "
        f"{stalled['queued']:,.0f} queued, {stalled['dropped']:,.0f} dropped, "
        f"traced {stalled['traced_mib']:.1f} MiB (peak "
        f"{stalled['peak_mib']:.1f} MiB), RSS +{stalled['rss_growth_mib']:.1f} MiB"
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().events))
