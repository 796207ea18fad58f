"""The task types the cluster benchmark's nodes run (imported by
``taskengine worker --import bench_tasks``, and by bench_pg_worker.py)."""

from __future__ import annotations

import time

from engine import task


@task("bench_noop")
async def noop(i: int = 0) -> None:
    return None


@task("bench_clock")
async def clock(i: int = 0) -> float:
    return time.time()
