"""A writer process for the cross-process tests: appends batches of events.

Run as ``python append_writer.py URL PREFIX BATCHES MAX_BATCH``: it opens a
store, prints ``ready``, waits for a line on stdin, appends BATCHES batches
of 1 to MAX_BATCH events (task ids ``PREFIX-<n>``), and prints ``done N``.
"""

from __future__ import annotations

import asyncio
import random
import sys

from engine.events import EventType, TaskEvent, utcnow
from engine.store.postgres import PostgresEventStore


async def main(url: str, prefix: str, batches: int, max_batch: int) -> None:
    store = PostgresEventStore(url, min_connections=1, max_connections=1)
    await store.open()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    rng = random.Random(prefix)
    written = 0
    for _ in range(batches):
        size = rng.randint(1, max_batch)
        events = [
            TaskEvent.build(
                None, f"{prefix}-{written + i}", 1, EventType.QUEUED, utcnow(), {}
            )
            for i in range(size)
        ]
        await store.append(events)
        written += size
    await store.close()
    print(f"done {written}", flush=True)


if __name__ == "__main__":
    url, prefix, batches, max_batch = sys.argv[1:5]
    asyncio.run(main(url, prefix, int(batches), int(max_batch)))
